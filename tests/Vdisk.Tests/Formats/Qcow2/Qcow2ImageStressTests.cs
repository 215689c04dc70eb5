using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Tests.Formats.Qcow2;

/// <summary>Refcount table relocation and concurrent writers, on images in memory.</summary>
public class Qcow2ImageStressTests
{
    private static MemoryBlockDevice Create(long size, params (string Key, string Value)[] options)
    {
        var device = new MemoryBlockDevice(name: "stress.qcow2");
        new Qcow2Format().Create(device, new ImageCreateOptions { Size = size, Options = options.ToDictionary(o => o.Key, o => o.Value) });
        return device;
    }

    private static Qcow2Image Open(MemoryBlockDevice device, bool readOnly = false) =>
        Qcow2Image.Open(new BorrowedBlockDevice(device), new ImageOpenOptions { ReadOnly = readOnly });

    [Fact]
    public void RefcountTableIsRelocatedSeveralTimesAndEverythingSurvivesAReopen()
    {
        // 512-byte clusters and 64-bit refcounts: one block covers 64 clusters (32 KiB), one table cluster 2 MiB.
        var device = Create(8L << 20, ("cluster_size", "512"), ("refcount_bits", "64"));
        byte[] shadow;
        List<long> tables;
        using (var image = Open(device))
        {
            (shadow, tables) = Qcow2Scenarios.FillShuffled(image, () => image.Header.RefcountTableOffset, 7L << 20, seed: 512);
            Assert.True(tables.Count >= 3, $"expected several refcount table relocations, saw offsets {string.Join(", ", tables)}");
            var back = new byte[image.Size];
            image.Read(0, back.AsMemory());
            Assert.True(shadow.AsSpan().SequenceEqual(back), "data differs before reopening");
        }
        using (var image = Open(device, readOnly: true))
        {
            Assert.Equal(tables[^1], image.Header.RefcountTableOffset);
            Assert.True(image.Header.RefcountTableClusters > 1);
            var back = new byte[image.Size];
            image.Read(0, back.AsMemory());
            Assert.True(shadow.AsSpan().SequenceEqual(back), "data differs after reopening");
        }
        // Writing after the reopen still finds free clusters and keeps earlier data.
        using (var image = Open(device))
        {
            var extra = Enumerable.Repeat((byte)0xEE, 65536).ToArray();
            image.Write(7L << 20, extra.AsSpan());
            var back = new byte[1 << 20];
            image.Read(6L << 20, back.AsSpan());
            Assert.True(shadow.AsSpan((int)(6L << 20), 1 << 20).SequenceEqual(back));
            image.Read(7L << 20, back.AsSpan(0, 65536));
            Assert.Equal(extra, back[..65536]);
        }
    }

    [Theory]
    [InlineData(65536)]
    [InlineData(16384)]
    [InlineData(4096)]
    public void ConcurrentWritersNeverTearABlockAndAllocateEachClusterOnce(int clusterSize)
    {
        const long region = 1L << 20;
        var device = Create(4L << 20, ("cluster_size", $"{clusterSize}"));
        long metadataClusters = (device.Length + clusterSize - 1) / clusterSize; // header, refcounts, L1
        Dictionary<long, Dictionary<int, int>> last;
        using (var image = Open(device))
        {
            last = Qcow2Scenarios.ConcurrentWriters(image, region, 400, seed: clusterSize);
            Assert.Null(Qcow2Scenarios.VerifyConcurrentResult(image, region, last));

            // Each guest cluster that was written has its own host cluster, and no two share one.
            var hosts = new HashSet<long>();
            long touched = 0;
            for (long c = 0; c < region / clusterSize; c++)
            {
                var s = image.GetBlockStatus(c * clusterSize, clusterSize);
                bool written = Enumerable.Range(0, clusterSize / Qcow2Scenarios.BlockSize).Any(i => last.ContainsKey(c * clusterSize / Qcow2Scenarios.BlockSize + i));
                Assert.Equal(written, s.Data);
                if (!written) continue;
                touched++;
                Assert.Equal(clusterSize, s.Length);
                Assert.True(hosts.Add(s.HostOffset), $"host offset 0x{s.HostOffset:x} is mapped twice");
            }
            // The file grew by exactly the data clusters plus the L2 tables: a double allocation would leak one.
            image.Flush();
            long l2Tables = (region / clusterSize + clusterSize / 8 - 1) / (clusterSize / 8);
            Assert.Equal((metadataClusters + touched + l2Tables) * clusterSize, device.Length);
        }
        using (var reopened = Open(device, readOnly: true))
            Assert.Null(Qcow2Scenarios.VerifyConcurrentResult(reopened, region, last));
    }
}
