using System.Buffers.Binary;
using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Tests.Formats.Qcow2;

/// <summary>
/// What one allocating 4 KiB write costs the file with -t writethrough (the request of `bench -w -s 4k -S 65536`),
/// counted on a recording device. Lazy refcounts take the refcount block and its flush out of the request; this
/// pins that design point independently of how fast the storage under a benchmark flushes.
/// </summary>
public class WritethroughRequestTests
{
    private const int Cluster = 65536;
    private const int Requests = 40;

    private sealed record Cost(int Flushes, int RefcountBlockWrites, int Writes, int ZeroRanges);

    private static Cost AllocatingWrites(bool lazy)
    {
        var file = new MemoryBlockDevice();
        new Qcow2Format().Create(file, new ImageCreateOptions
        {
            Size = 1L << 30,
            Options = new Dictionary<string, string> { ["lazy_refcounts"] = lazy ? "on" : "off" },
        });
        var recorder = new RecordingBlockDevice(file, leaveInnerOpen: true);
        using var image = Qcow2Image.Open(recorder, new ImageOpenOptions { Cache = CacheMode.Writethrough });
        var data = Enumerable.Repeat((byte)0x5A, 4096).ToArray();
        image.Write(0, data.AsSpan()); // the first request also sets the dirty bit (lazy) and creates the L2 table
        int from = recorder.Records.Length;
        for (int i = 1; i <= Requests; i++) image.Write((long)i * Cluster, data.AsSpan());
        var records = recorder.Records.Skip(from).ToList();

        var entry = new byte[8];
        file.Read(image.Header.RefcountTableOffset, entry.AsMemory());
        long block = (long)BinaryPrimitives.ReadUInt64BigEndian(entry);
        Assert.NotEqual(0, block);
        return new Cost(
            records.Count(r => r.Kind == RecordKind.Flush),
            records.Count(r => r.Kind == RecordKind.Write && r.Offset >= block && r.Offset < block + Cluster),
            records.Count(r => r.Kind == RecordKind.Write),
            records.Count(r => r.Kind == RecordKind.WriteZeroes));
    }

    [Fact]
    public void With_lazy_refcounts_a_request_makes_one_flush_and_leaves_the_refcount_block_alone()
    {
        var cost = AllocatingWrites(lazy: true);
        Assert.Equal(Requests, cost.Flushes);
        Assert.Equal(0, cost.RefcountBlockWrites);
        // zero-range of the new cluster, then the data and the changed L2 page: nothing else
        Assert.Equal(Requests, cost.ZeroRanges);
        Assert.Equal(2 * Requests, cost.Writes);
    }

    [Fact]
    public void Without_lazy_refcounts_the_refcount_block_goes_first_behind_a_flush_of_its_own()
    {
        var cost = AllocatingWrites(lazy: false);
        Assert.Equal(2 * Requests, cost.Flushes);
        Assert.Equal(Requests, cost.RefcountBlockWrites);
        Assert.Equal(Requests, cost.ZeroRanges);
        Assert.Equal(3 * Requests, cost.Writes);
    }
}
