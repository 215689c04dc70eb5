using Vdisk.Images;
using Vdisk.BlockIO;
using Xunit;
using static Vdisk.Tests.BlockIO.DeviceIo;

namespace Vdisk.Tests.BlockIO;

public class RecordingBlockDeviceTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task RecordsEveryChangeInOrderButNoReads(bool isAsync)
    {
        using var recorder = new RecordingBlockDevice(new MemoryBlockDevice());
        var io = new DeviceIo(recorder, isAsync);
        var data = Pattern(3000, 1);
        await io.Write(100, data);
        await io.Read(0, 4096);
        await io.WriteZeroes(8192, 4096, mayUnmap: true);
        await io.Discard(0, 512);
        await io.SetLength(65_536);
        await io.Flush();

        Assert.Equal(
            [
                new DeviceRecord(RecordKind.WriteZeroes, 8192, 4096, MayUnmap: true),
                new DeviceRecord(RecordKind.Discard, 0, 512),
                new DeviceRecord(RecordKind.SetLength, 0, 65_536),
                new DeviceRecord(RecordKind.Flush, 0, 0),
            ],
            recorder.Records.Skip(1));
        var write = recorder.Records[0];
        Assert.Equal((RecordKind.Write, 100L, 3000L), (write.Kind, write.Offset, write.Length));
        Assert.Equal(data, write.Data.ToArray());
        Assert.Equal([4], recorder.FlushIndices.ToArray());
    }

    [Fact]
    public void RecordKeepsItsOwnCopyOfTheWrittenData()
    {
        using var recorder = new RecordingBlockDevice(new MemoryBlockDevice());
        var buffer = Pattern(512, 2);
        var original = buffer.ToArray();
        recorder.Write(0, buffer.AsSpan());
        buffer.AsSpan().Clear();
        Assert.Equal(original, recorder.Records[0].Data.ToArray());
    }

    [Fact]
    public void FailedRequestsAreNotRecorded()
    {
        using var recorder = new RecordingBlockDevice(new MemoryBlockDevice(4096, readOnly: true));
        Assert.Throws<DiskImageException>(() => recorder.Write(0, new byte[512].AsSpan()));
        Assert.Throws<DiskImageException>(() => recorder.SetLength(0));
        recorder.Flush();
        Assert.Equal([RecordKind.Flush], recorder.Records.Select(r => r.Kind));
    }

    [Fact]
    public void RecordersSharingAClockShareOneTimeline()
    {
        var clock = new RecordClock();
        using var a = new RecordingBlockDevice(new MemoryBlockDevice(), clock: clock);
        using var b = new RecordingBlockDevice(new MemoryBlockDevice(), clock: clock);
        a.Write(0, Pattern(512, 1).AsSpan());
        b.Write(0, Pattern(512, 2).AsSpan());
        b.Flush();
        a.Flush();

        Assert.Equal([1L, 4L], a.RecordTimes.ToArray());
        Assert.Equal([2L, 3L], b.RecordTimes.ToArray());
        Assert.Equal(4, clock.Now);
        using var alone = new RecordingBlockDevice(new MemoryBlockDevice());
        alone.Flush();
        Assert.Equal([1L], alone.RecordTimes.ToArray());
    }

    [Fact]
    public void BuildStateAppliesThePrefixThenTheChosenLaterRecords()
    {
        var inner = new MemoryBlockDevice();
        var initial = Pattern(16_384, 3);
        inner.Write(0, initial.AsSpan()); // before recording: part of the initial state
        using var recorder = new RecordingBlockDevice(inner, leaveInnerOpen: true);
        var first = Pattern(1000, 4);
        var second = Pattern(2000, 5);
        var third = Pattern(500, 6);
        recorder.Write(10, first.AsSpan());
        recorder.Flush();
        recorder.Write(5000, second.AsSpan());   // record 2, dropped below
        recorder.Write(20_000, third.AsSpan());  // record 3, kept below
        recorder.WriteZeroes(0, 100);            // record 4

        var expected = initial.ToArray();
        first.CopyTo(expected, 10);
        Assert.Equal(initial, recorder.BuildState(0).ToArray());
        Assert.Equal(expected, recorder.BuildState(recorder.FlushIndices[0] + 1).ToArray());

        var crash = recorder.BuildState(recorder.FlushIndices[0] + 1, [3]).ToArray();
        Assert.Equal(20_500, crash.Length);
        Assert.Equal(expected, crash[..16_384]);
        Assert.Equal(third, crash[20_000..]);

        Assert.Equal(inner.ToArray(), recorder.BuildState(recorder.Records.Length).ToArray());
    }

    [Fact]
    public void WritesSplitAtSectorBoundariesForTornStates()
    {
        using var recorder = new RecordingBlockDevice(new MemoryBlockDevice());
        var data = Pattern(1500, 7);
        recorder.Write(1000, data.AsSpan());
        recorder.SetLength(4096);

        var pieces = recorder.Records[0].SplitIntoSectors();
        Assert.Equal([(1000L, 24L), (1024L, 512L), (1536L, 512L), (2048L, 452L)], pieces.Select(p => (p.Offset, p.Length)));
        Assert.Equal(data, pieces.SelectMany(p => p.Data.ToArray()).ToArray());
        Assert.Equal([recorder.Records[1]], recorder.Records[1].SplitIntoSectors());

        // A torn write: only its middle sectors reached the disk.
        var torn = recorder.BuildState(0, pieces.Skip(1).Take(2)).ToArray();
        Assert.Equal(2048, torn.Length);
        Assert.All(torn[..1024], b => Assert.Equal(0, b));
        Assert.Equal(data[24..1048], torn[1024..]);
    }

    [Fact]
    public void InitialStateIsCapturedFromASparseFile()
    {
        using var t = TestDevice.Create(DeviceKind.FileWriteback);
        var data = Pattern(70_000, 8);
        t.Device.SetLength(4 << 20);
        t.Device.Write(1 << 20, data.AsSpan());
        t.Device.Write((4 << 20) - 10, data.AsSpan(0, 10));

        using var recorder = new RecordingBlockDevice(t.Device, leaveInnerOpen: true);
        var state = recorder.BuildState(0);
        Assert.Equal(4 << 20, state.Length);
        Assert.Equal(ReadAll(t.Device), state.ToArray());
        Assert.Equal(new DeviceExtent(0, 1 << 20, false), state.GetExtent(0, 1 << 20)); // holes are not copied as zeros
    }

    [Fact]
    public async Task ConcurrentWritersAreAllRecorded()
    {
        var inner = new MemoryBlockDevice();
        using var recorder = new RecordingBlockDevice(inner, leaveInnerOpen: true);
        await Task.WhenAll(Enumerable.Range(0, 8).Select(w => Task.Run(async () =>
        {
            for (int i = 0; i < 50; i++) await recorder.WriteAsync((w * 50 + i) * 1000L, Pattern(1000, w * 50 + i));
        })));

        Assert.Equal(400, recorder.Records.Length);
        Assert.Equal(inner.ToArray(), recorder.BuildState(400).ToArray());
    }

    private static byte[] ReadAll(BlockDevice device)
    {
        var all = new byte[device.Length];
        device.Read(0, all.AsSpan());
        return all;
    }
}
