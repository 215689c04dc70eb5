using Vdisk.Images;
using Vdisk.BlockIO;
using Vdisk.Formats.Raw;
using Xunit;
using static Vdisk.Tests.BlockIO.DeviceIo;

namespace Vdisk.Tests.BlockIO;

public class FaultInjectingBlockDeviceTests
{
    public static TheoryData<bool> Paths => new(false, true);

    [Theory, MemberData(nameof(Paths))]
    public async Task OnceRuleFailsOnlyTheFirstMatchAndNeverReachesTheInnerDevice(bool isAsync)
    {
        var inner = new MemoryBlockDevice();
        using var faults = new FaultInjectingBlockDevice(inner);
        var io = new DeviceIo(faults, isAsync);
        faults.AddRule(new FaultRule(DeviceOperation.Write) { Once = true });

        var e = await Assert.ThrowsAsync<DiskImageException>(() => io.Write(0, Pattern(512, 1)));
        Assert.Equal((int)InjectedError.Eio, e.Errno);
        Assert.Equal(DiskImageErrorKind.Io, e.Kind);
        Assert.Equal(0, inner.Length);
        await io.Write(0, Pattern(512, 1));
        Assert.Equal(Pattern(512, 1), inner.ToArray());
        Assert.Equal(1, faults.InjectedFaults);
    }

    [Theory, MemberData(nameof(Paths))]
    public async Task AlwaysRuleFailsEveryMatchUntilRemovedAndSparesOtherOperations(bool isAsync)
    {
        using var faults = new FaultInjectingBlockDevice(new MemoryBlockDevice());
        var io = new DeviceIo(faults, isAsync);
        var rule = faults.AddRule(new FaultRule(DeviceOperation.Flush, InjectedError.Enospc));

        for (int i = 0; i < 3; i++)
        {
            var e = await Assert.ThrowsAsync<DiskImageException>(() => io.Flush());
            Assert.Equal(28, e.Errno);
            Assert.Equal(DiskImageErrorKind.NoSpace, e.Kind);
            Assert.Contains("No space left on device", e.Message);
        }
        await io.Write(0, new byte[512]);
        await io.WriteZeroes(0, 512, mayUnmap: false);
        Assert.Equal(3, faults.InjectedFaults);

        Assert.True(faults.RemoveRule(rule));
        await io.Flush();
        Assert.Equal(3, faults.InjectedFaults);
    }

    [Theory]
    [InlineData(true, new[] { false, false, true, false, false })]
    [InlineData(false, new[] { false, false, true, true, true })]
    public async Task NthRuleLetsEarlierMatchesThrough(bool once, bool[] expectedFailures)
    {
        using var faults = new FaultInjectingBlockDevice(new MemoryBlockDevice(65_536));
        var io = new DeviceIo(faults, isAsync: false);
        faults.AddRule(new FaultRule(DeviceOperation.Read) { Nth = 3, Once = once });

        var failures = new List<bool>();
        foreach (var _ in expectedFailures)
        {
            try { await io.Read(0, 512); failures.Add(false); }
            catch (IOException) { failures.Add(true); }
        }
        Assert.Equal(expectedFailures, failures);
    }

    [Theory, MemberData(nameof(Paths))]
    public async Task RangeRuleFailsOnlyRequestsOverlappingTheRange(bool isAsync)
    {
        using var faults = new FaultInjectingBlockDevice(new MemoryBlockDevice());
        var io = new DeviceIo(faults, isAsync);
        faults.AddRule(new FaultRule(DeviceOperation.Discard) { Range = (4096, 4096) });
        faults.AddRule(new FaultRule(DeviceOperation.SetLength) { Range = (1 << 20, 1) });

        await io.Discard(0, 4096);
        await io.Discard(8192, 4096);
        await Assert.ThrowsAsync<DiskImageException>(() => io.Discard(4000, 100));
        await Assert.ThrowsAsync<DiskImageException>(() => io.Discard(8191, 1));
        await io.Write(4096, new byte[4096]); // same range, other operation
        await io.SetLength((1 << 20) + 1);
        await Assert.ThrowsAsync<DiskImageException>(() => io.SetLength(1 << 20));
        Assert.Equal((1 << 20) + 1, faults.Length);
        Assert.Equal(3, faults.InjectedFaults);
    }

    [Fact]
    public void EveryMatchingRuleCountsTheRequestAndTheFirstDueOneFires()
    {
        using var faults = new FaultInjectingBlockDevice(new MemoryBlockDevice());
        faults.AddRule(new FaultRule(DeviceOperation.Write, InjectedError.Enospc) { Nth = 2, Once = true });
        faults.AddRule(new FaultRule(DeviceOperation.Write) { Nth = 3, Once = true });

        faults.Write(0, new byte[1].AsSpan());
        Assert.Equal(28, Assert.Throws<DiskImageException>(() => faults.Write(0, new byte[1].AsSpan())).Errno);
        Assert.Equal(5, Assert.Throws<DiskImageException>(() => faults.Write(0, new byte[1].AsSpan())).Errno);
        faults.Write(0, new byte[1].AsSpan());
    }

    [Theory, MemberData(nameof(Paths))]
    public async Task CrashDropsEveryChangeAfterTheLastFlush(bool isAsync)
    {
        var durable = Pattern(8192, 2);
        using var faults = new FaultInjectingBlockDevice(new MemoryBlockDevice());
        var io = new DeviceIo(faults, isAsync);
        await io.Write(0, durable);
        await io.Flush();
        await io.Write(100, Pattern(100, 3));
        await io.WriteZeroes(4096, 4096, mayUnmap: true);
        await io.Discard(0, 512);
        await io.SetLength(1 << 20);
        await io.Write(2 << 20, Pattern(10, 4));

        Assert.Equal(5, faults.UnflushedCount);
        Assert.Equal(durable, faults.SimulateCrash().ToArray());

        await io.Flush();
        Assert.Equal(0, faults.UnflushedCount);
        var current = await io.Read(0, (int)faults.Length);
        Assert.Equal(current, faults.SimulateCrash().ToArray());
    }

    [Fact]
    public void FailedFlushMakesNothingDurable()
    {
        using var faults = new FaultInjectingBlockDevice(new MemoryBlockDevice());
        faults.AddRule(new FaultRule(DeviceOperation.Flush) { Once = true });
        faults.Write(0, Pattern(512, 5).AsSpan());

        Assert.Throws<DiskImageException>(() => faults.Flush());
        Assert.Equal(0, faults.SimulateCrash().Length);
        faults.Flush();
        Assert.Equal(Pattern(512, 5), faults.SimulateCrash().ToArray());
    }

    [Fact]
    public void ContentPresentBeforeWrappingCountsAsDurable()
    {
        var inner = new MemoryBlockDevice();
        inner.Write(0, Pattern(3000, 6).AsSpan());
        using var faults = new FaultInjectingBlockDevice(inner);
        faults.Write(0, new byte[3000].AsSpan());
        Assert.Equal(Pattern(3000, 6), faults.SimulateCrash().ToArray());
    }

    [Fact]
    public void CrashOfAnAbandonedImageKeepsOnlyWhatItFlushed()
    {
        var faults = new FaultInjectingBlockDevice(new MemoryBlockDevice(65_536));
        var image = new RawImage(faults, readOnly: false);
        image.Write(0, Pattern(4096, 7).AsSpan());
        image.Flush();
        image.Write(4096, Pattern(4096, 8).AsSpan());
        image.Abandon(); // disposes the device without the flush a clean close would do

        var crash = faults.SimulateCrash().ToArray();
        Assert.Equal(Pattern(4096, 7), crash[..4096]);
        Assert.All(crash[4096..], b => Assert.Equal(0, b));
    }

    [Fact]
    public async Task ConcurrentWritersThenFlushAreAllDurable()
    {
        var inner = new MemoryBlockDevice();
        using var faults = new FaultInjectingBlockDevice(inner, leaveInnerOpen: true);
        await Task.WhenAll(Enumerable.Range(0, 8).Select(w => Task.Run(async () =>
        {
            for (int i = 0; i < 50; i++)
            {
                await faults.WriteAsync((w * 50 + i) * 777L, Pattern(777, w * 50 + i));
                if (i % 10 == 0) await faults.FlushAsync(); // flushes race with the other writers
            }
        })));
        await faults.FlushAsync();

        Assert.Equal(0, faults.UnflushedCount);
        Assert.Equal(inner.ToArray(), faults.SimulateCrash().ToArray());
    }

    [Fact]
    public void RuleNeedsAPositiveNth()
    {
        using var faults = new FaultInjectingBlockDevice(new MemoryBlockDevice());
        Assert.Throws<ArgumentOutOfRangeException>(() => faults.AddRule(new FaultRule(DeviceOperation.Read) { Nth = 0 }));
    }
}
