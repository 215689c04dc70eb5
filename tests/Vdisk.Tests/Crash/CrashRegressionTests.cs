using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Tests.Crash;

/// <summary>Crash states that once exposed bugs, built by hand so that each one is hit every time.</summary>
public class CrashRegressionTests
{
    private const int Cluster = 65536;

    private static byte[] Filled(int length, byte value) => Enumerable.Repeat(value, length).ToArray();

    private static (RecordingBlockDevice Recorder, Qcow2Image Image) Open(bool lazy)
    {
        var file = new MemoryBlockDevice();
        new Qcow2Format().Create(file, new ImageCreateOptions
        {
            Size = 1 << 20,
            Options = new Dictionary<string, string> { ["lazy_refcounts"] = lazy ? "on" : "off" },
        });
        var recorder = new RecordingBlockDevice(file, leaveInnerOpen: true);
        return (recorder, Qcow2Image.Open(recorder, new ImageOpenOptions()));
    }

    /// <summary>
    /// Every crash after <paramref name="from"/> in which all metadata writes land and no data write does: the
    /// guest must never read <paramref name="stale"/> in [offset, offset+length). Data writes are those filled with <paramref name="newData"/>.
    /// </summary>
    private static void AssertNoCrashShowsStaleData(RecordingBlockDevice recorder, int from, long offset, int length, byte[] stale, byte newData)
    {
        var records = recorder.Records;
        var flushes = recorder.FlushIndices.Where(f => f >= from).ToList();
        Assert.NotEmpty(flushes);
        foreach (int flush in flushes)
        {
            // Up to the next flush: what that flush covers is durable once it returns.
            int next = flush + 1;
            while (next < records.Length && records[next].Kind != RecordKind.Flush) next++;
            var metadataOnly = Enumerable.Range(flush + 1, next - flush - 1)
                .Select(i => records[i]).Where(r => r.Kind != RecordKind.Write || r.Data.Span.ContainsAnyExcept(newData));
            using var state = recorder.BuildState(flush + 1, metadataOnly);
            using var image = Qcow2Image.Open(new BorrowedBlockDevice(state), new ImageOpenOptions { ReadOnly = true });
            var back = new byte[length];
            image.Read(offset, back.AsMemory());
            Assert.False(back.AsSpan().SequenceEqual(stale), $"crash after record {flush} shows another cluster's old data");
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ReusedFreedClusterIsNeverLinkedBeforeItsNewDataIsDurable(bool lazy)
    {
        var (recorder, image) = Open(lazy);
        var old = Filled(Cluster, 0xAA);
        image.Write(0, old.AsSpan());
        image.Flush();
        image.WriteZeroes(0, Cluster, mayUnmap: true); // frees the host cluster, without discarding its content
        image.Flush();
        int from = recorder.Records.Length;
        image.Write(Cluster, Filled(Cluster, 0x55).AsSpan()); // reuses the freed host cluster
        image.Flush();
        image.Abandon();
        AssertNoCrashShowsStaleData(recorder, from - 1, Cluster, Cluster, old, 0x55);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void PreallocatedZeroClusterIsNotUnzeroedBeforeItsNewDataIsDurable(bool lazy)
    {
        var (recorder, image) = Open(lazy);
        var old = Filled(Cluster, 0xAA);
        image.Write(0, old.AsSpan());
        image.WriteZeroes(0, Cluster, mayUnmap: false); // keeps the host cluster and its stale content
        image.Flush();
        int from = recorder.Records.Length;
        image.Write(0, Filled(Cluster, 0x55).AsSpan());
        image.Flush();
        image.Abandon();
        AssertNoCrashShowsStaleData(recorder, from - 1, 0, Cluster, old, 0x55);
    }

    [Fact]
    public void CheckRepairOnADirtyImageWritesTheRefcountsBeforeClearingTheDirtyBit()
    {
        var (recorder, image) = Open(lazy: true);
        image.Write(0, Filled(3 * Cluster, 0x11).AsSpan());
        image.Flush();
        Assert.True(image.IsDirty);
        var result = image.Check(CheckRepair.All);
        Assert.Equal(0, result.Corruptions);
        image.Abandon(); // everything the check wrote is on the device, the refcount cache is lost

        using var state = recorder.BuildState(recorder.Records.Length);
        using var crashed = Qcow2Image.Open(new BorrowedBlockDevice(state), new ImageOpenOptions { ReadOnly = true });
        var check = crashed.Check();
        Assert.True(check.Corruptions == 0 || crashed.IsDirty, $"{check.Corruptions} corruptions without the dirty bit: {string.Join("; ", check.Messages.Take(3))}");
    }

    [Fact]
    public void L1EntriesWhoseWriteFailedAreWrittenByTheNextFlush()
    {
        var file = new MemoryBlockDevice();
        new Qcow2Format().Create(file, new ImageCreateOptions { Size = 8 << 20, Options = new Dictionary<string, string> { ["cluster_size"] = "4096" } });
        long l1 = QcowLayout.Read(file).L1Offset;
        var fault = new FaultInjectingBlockDevice(file, leaveInnerOpen: true);
        var data = Filled(4096, 0x77);
        using (var image = Qcow2Image.Open(fault, new ImageOpenOptions()))
        {
            image.Write(2 << 20, data.AsSpan());
            fault.AddRule(new FaultRule(DeviceOperation.Write) { Range = (l1, 64), Once = true });
            Assert.Throws<DiskImageException>(image.Flush);
            image.Flush();
        }
        using var reopened = Qcow2Image.Open(new BorrowedBlockDevice(fault.SimulateCrash()), new ImageOpenOptions { ReadOnly = true });
        var back = new byte[4096];
        reopened.Read(2 << 20, back.AsSpan());
        Assert.Equal(data, back);
    }

    /// <summary>
    /// A grow within the L1 table's reach used to write and flush only the size field, leaving the tables of
    /// earlier writes in the cache: a crash after the resize returned lost data it had reported durable.
    /// </summary>
    [Fact]
    public void GrowInPlaceMakesEarlierWritesDurable()
    {
        var (recorder, image) = Open(lazy: false);
        var data = Filled(Cluster, 0x5C);
        image.Write(Cluster, data.AsSpan());
        image.Resize(2 << 20);
        int lastFlush = recorder.FlushIndices.Last();
        image.Dispose();
        using var state = recorder.BuildState(lastFlush + 1);
        using var crashed = Qcow2Image.Open(new BorrowedBlockDevice(state), new ImageOpenOptions { ReadOnly = true });
        var back = new byte[Cluster];
        crashed.Read(Cluster, back.AsMemory());
        Assert.Equal(2 << 20, crashed.Size);
        Assert.Equal(data, back);
    }
}
