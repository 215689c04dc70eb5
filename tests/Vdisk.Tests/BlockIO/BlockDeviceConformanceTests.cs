using Vdisk.BlockIO;
using Xunit;
using static Vdisk.Tests.BlockIO.DeviceIo;

namespace Vdisk.Tests.BlockIO;

/// <summary>The contract every <see cref="BlockDevice"/> keeps, checked on memory and on files in every cache mode.</summary>
public class BlockDeviceConformanceTests
{
    public static TheoryData<DeviceKind, bool> Cases => TestDevice.KindsAndPaths();

    [Theory, MemberData(nameof(Cases))]
    public async Task UnalignedWritesReadBackExactly(DeviceKind kind, bool isAsync)
    {
        using var t = TestDevice.Create(kind);
        var io = new DeviceIo(t.Device, isAsync);
        var model = new byte[300_000];
        (int Offset, int Length)[] writes = [(0, 1), (1, 511), (4095, 2), (4097, 8191), (65_535, 70_001), (200_003, 99_997), (10, 5000)];
        int seed = 0;
        foreach (var (offset, length) in writes)
        {
            var data = Pattern(length, ++seed);
            await io.Write(offset, data);
            data.CopyTo(model, offset);
        }
        Assert.Equal(model.Length, t.Device.Length);
        Assert.Equal(model, await io.Read(0, model.Length));
        Assert.Equal(model[4000..4200], await io.Read(4000, 200));
        Assert.Equal(model[65_000..140_001], await io.Read(65_000, 75_001));
    }

    [Theory, MemberData(nameof(Cases))]
    public async Task ReadsPastTheEndReturnZerosAndDoNotExtend(DeviceKind kind, bool isAsync)
    {
        using var t = TestDevice.Create(kind);
        var io = new DeviceIo(t.Device, isAsync);
        var data = Pattern(5000, 1);
        await io.Write(0, data);

        var straddling = await io.Read(4000, 8192);
        Assert.Equal(data[4000..], straddling[..1000]);
        Assert.All(straddling[1000..], b => Assert.Equal(0, b));
        Assert.All(await io.Read(1 << 20, 4103), b => Assert.Equal(0, b));
        Assert.Equal(5000, t.Device.Length);
    }

    [Theory, MemberData(nameof(Cases))]
    public async Task WriteZeroesClearsExactlyTheRange(DeviceKind kind, bool isAsync)
    {
        using var t = TestDevice.Create(kind);
        var io = new DeviceIo(t.Device, isAsync);
        var model = Pattern(256 * 1024, 2);
        await io.Write(0, model);

        (int Offset, int Length, bool MayUnmap)[] zeroes = [(1000, 70_000, false), (131_072, 65_536, true), (100_001, 3, true), (200_000, 4096, false)];
        foreach (var (offset, length, mayUnmap) in zeroes)
        {
            await io.WriteZeroes(offset, length, mayUnmap);
            Array.Clear(model, offset, length);
        }
        Assert.Equal(model.Length, t.Device.Length);
        Assert.Equal(model, await io.Read(0, model.Length));
    }

    [Theory, MemberData(nameof(Cases))]
    public async Task WriteZeroesPastTheEndExtendsWithZeros(DeviceKind kind, bool isAsync)
    {
        using var t = TestDevice.Create(kind);
        var io = new DeviceIo(t.Device, isAsync);
        var data = Pattern(10_000, 3);
        await io.Write(0, data);

        await io.WriteZeroes(20_000, 5_001, mayUnmap: false);
        Assert.Equal(25_001, t.Device.Length);
        await io.WriteZeroes(24_000, 6_000, mayUnmap: true); // straddles the end
        Assert.Equal(30_000, t.Device.Length);

        var back = await io.Read(0, 30_000);
        Assert.Equal(data, back[..10_000]);
        Assert.All(back[10_000..], b => Assert.Equal(0, b));
    }

    [Theory, MemberData(nameof(Cases))]
    public async Task DiscardLeavesZerosOrOldDataAndKeepsNeighboursAndLength(DeviceKind kind, bool isAsync)
    {
        using var t = TestDevice.Create(kind);
        var io = new DeviceIo(t.Device, isAsync);
        var old = Pattern(256 * 1024, 4);
        await io.Write(0, old);

        (int Offset, int Length)[] discards = [(4096, 65_536), (5, 95), (250_000, 100_000)];
        foreach (var (offset, length) in discards) await io.Discard(offset, length);

        Assert.Equal(old.Length, t.Device.Length);
        var back = await io.Read(0, old.Length);
        for (int i = 0; i < old.Length; i++)
        {
            bool discarded = discards.Any(d => i >= d.Offset && i < d.Offset + d.Length);
            if (discarded) Assert.True(back[i] == 0 || back[i] == old[i], $"byte {i} is {back[i]}, neither 0 nor the old {old[i]}");
            else if (back[i] != old[i]) Assert.Fail($"byte {i} outside the discarded ranges changed");
        }
    }

    [Theory, MemberData(nameof(Cases))]
    public async Task SetLengthTruncatesForGoodAndGrowsWithZeros(DeviceKind kind, bool isAsync)
    {
        using var t = TestDevice.Create(kind);
        var io = new DeviceIo(t.Device, isAsync);
        var data = Pattern(100_000, 5);
        await io.Write(0, data);

        await io.SetLength(50_001);
        Assert.Equal(50_001, t.Device.Length);
        await io.SetLength(200_000);
        Assert.Equal(200_000, t.Device.Length);

        var back = await io.Read(0, 200_000);
        Assert.Equal(data[..50_001], back[..50_001]);
        Assert.All(back[50_001..], b => Assert.Equal(0, b)); // the truncated data must not come back
        await io.SetLength(0);
        Assert.Equal(0, t.Device.Length);
    }

    [Theory, MemberData(nameof(Cases))]
    public async Task ExtentsReportWrittenDataAndNeverWrittenHoles(DeviceKind kind, bool isAsync)
    {
        const int MiB = 1 << 20;
        using var t = TestDevice.Create(kind);
        var io = new DeviceIo(t.Device, isAsync);
        await io.SetLength(4 * MiB);
        await io.Write(MiB, Pattern(65_536, 6));

        Assert.Equal(new DeviceExtent(0, MiB, false), await io.GetExtent(0, 4 * MiB));
        Assert.Equal(new DeviceExtent(MiB, 65_536, true), await io.GetExtent(MiB, 3 * MiB));
        Assert.Equal(new DeviceExtent(MiB + 65_536, 3 * MiB - 65_536, false), await io.GetExtent(MiB + 65_536, 3 * MiB - 65_536));
        Assert.Equal(new DeviceExtent(MiB + 100, 200, true), await io.GetExtent(MiB + 100, 200));
        Assert.False((await io.GetExtent(4 * MiB, 4096)).IsData);
    }

    [Theory, MemberData(nameof(Cases))]
    public async Task ConcurrentWritersAtDisjointOffsetsAllLand(DeviceKind kind, bool isAsync)
    {
        const int Writers = 6, Region = 50_003; // regions share 512 B and 4 KiB blocks at their borders
        using var t = TestDevice.Create(kind);
        var io = new DeviceIo(t.Device, isAsync);
        var model = new byte[Writers * Region];

        // The device starts empty, so the writers also race to extend it.
        await Task.WhenAll(Enumerable.Range(0, Writers).Select(w => Task.Run(async () =>
        {
            var random = new Random(w);
            var chunks = new List<(int Offset, int Length)>();
            for (int pos = 0; pos < Region;)
            {
                int length = Math.Min(Region - pos, random.Next(1, 9000));
                chunks.Add((w * Region + pos, length));
                pos += length;
            }
            foreach (var (offset, length) in chunks.OrderBy(_ => random.Next()))
            {
                var data = Pattern(length, offset);
                await io.Write(offset, data);
                data.CopyTo(model, offset);
            }
        })));

        Assert.Equal(model.Length, t.Device.Length);
        Assert.Equal(model, await io.Read(0, model.Length));
    }

    [Theory, MemberData(nameof(Cases))]
    public async Task GatherWriteLandsTheBuffersBackToBack(DeviceKind kind, bool isAsync)
    {
        using var t = TestDevice.Create(kind);
        var parts = new[] { Pattern(100, 7), Pattern(8192, 8), Pattern(4001, 9) };
        await t.Device.WriteGatherCoreAsync(333, parts.Select(p => (ReadOnlyMemory<byte>)p).ToList(), isAsync, default);

        Assert.Equal(333 + 100 + 8192 + 4001, t.Device.Length);
        Assert.Equal(parts.SelectMany(p => p).ToArray(), await new DeviceIo(t.Device, isAsync).Read(333, 100 + 8192 + 4001));
    }

    [Theory, MemberData(nameof(Cases))]
    public async Task FlushedDataSurvivesReopening(DeviceKind kind, bool isAsync)
    {
        using var t = TestDevice.Create(kind);
        var data = Pattern(12_345, 10);
        var io = new DeviceIo(t.Device, isAsync);
        await io.Write(777, data);
        await io.Flush();

        var reopened = new DeviceIo(t.Reopen(readOnly: true), isAsync);
        Assert.Equal(777 + data.Length, reopened.Device.Length);
        Assert.Equal(data, await reopened.Read(777, data.Length));
    }

    [Theory, MemberData(nameof(Cases))]
    public async Task ReadOnlyDeviceRefusesEveryChange(DeviceKind kind, bool isAsync)
    {
        using var t = TestDevice.Create(kind);
        var data = Pattern(8192, 11);
        t.Device.Write(0, data.AsSpan());
        var io = new DeviceIo(t.Reopen(readOnly: true), isAsync);

        Assert.True(io.Device.IsReadOnly);
        await Assert.ThrowsAnyAsync<IOException>(() => io.Write(0, new byte[512]));
        await Assert.ThrowsAnyAsync<IOException>(() => io.WriteZeroes(0, 4096, mayUnmap: true));
        await Assert.ThrowsAnyAsync<IOException>(() => io.Discard(0, 4096));
        await Assert.ThrowsAnyAsync<IOException>(() => io.SetLength(1));
        Assert.Equal(data, await io.Read(0, data.Length));
    }

    [Theory, MemberData(nameof(Cases))]
    public async Task DisposedDeviceThrowsObjectDisposed(DeviceKind kind, bool isAsync)
    {
        using var t = TestDevice.Create(kind);
        var io = new DeviceIo(t.Device, isAsync);
        t.Device.Dispose();

        await Assert.ThrowsAsync<ObjectDisposedException>(() => io.Read(0, 512));
        await Assert.ThrowsAsync<ObjectDisposedException>(() => io.Write(0, new byte[512]));
        await Assert.ThrowsAsync<ObjectDisposedException>(() => io.WriteZeroes(0, 512, mayUnmap: false));
        await Assert.ThrowsAsync<ObjectDisposedException>(() => io.Discard(0, 512));
        await Assert.ThrowsAsync<ObjectDisposedException>(() => io.Flush());
        await Assert.ThrowsAsync<ObjectDisposedException>(() => io.SetLength(4096));
        await Assert.ThrowsAsync<ObjectDisposedException>(() => io.GetExtent(0, 4096));
    }
}
