using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Tests.Formats.Qcow2;

/// <summary>Qcow2Image.WriteCompressed: packing, refcounts, fallback to plain clusters, overwrites, on images in memory.</summary>
public class CompressedWriteTests
{
    private static MemoryBlockDevice Create(long size, params (string Key, string Value)[] options)
    {
        var device = new MemoryBlockDevice(name: "c.qcow2");
        new Qcow2Format().Create(device, new ImageCreateOptions { Size = size, Options = options.ToDictionary(o => o.Key, o => o.Value) });
        return device;
    }

    private static Qcow2Image Open(MemoryBlockDevice device) => Qcow2Image.Open(new BorrowedBlockDevice(device), new ImageOpenOptions());

    /// <summary>Compressible but not trivial: a repeating text with a cluster-specific tag.</summary>
    private static byte[] Compressible(int length, int seed)
    {
        var data = new byte[length];
        var text = System.Text.Encoding.ASCII.GetBytes($"cluster {seed} of a compressed write test; ");
        for (int i = 0; i < length; i++) data[i] = text[i % text.Length];
        return data;
    }

    [Theory]
    [InlineData("zlib", "65536", "off")]
    [InlineData("zstd", "65536", "off")]
    [InlineData("zlib", "4096", "off")]
    [InlineData("zstd", "65536", "on")]
    public async Task ManyClustersReadBackAndPassCheck(string type, string clusterSize, string extended)
    {
        var device = Create(8L << 20, ("compression_type", type), ("cluster_size", clusterSize), ("extended_l2", extended));
        int cs = int.Parse(clusterSize);
        var expected = new byte[8L << 20];
        using (var image = Open(device))
        {
            // Several clusters per call (compressed in parallel), sync and async.
            for (int i = 0; i < 40; i += 4)
            {
                var data = new byte[4 * cs];
                for (int k = 0; k < 4; k++) Compressible(cs, i + k).CopyTo(data, k * cs);
                data.CopyTo(expected, (long)i * cs);
                if (i % 8 == 0) image.WriteCompressed((long)i * cs, data);
                else await image.WriteCompressedAsync((long)i * cs, data);
            }
            var status = image.GetBlockStatus(0, cs);
            Assert.True(status.Compressed, $"cluster 0 is not compressed: {status}");
            image.Flush();
        }
        using (var image = Open(device))
        {
            var back = new byte[expected.Length];
            image.Read(0, back.AsMemory());
            Assert.True(expected.AsSpan().SequenceEqual(back), "compressed clusters read back differently");
            var check = image.Check();
            Assert.True(check.IsClean, $"check found {check.Corruptions} corruptions, {check.Leaks} leaks");
            Assert.Equal(40, check.CompressedClusters);
        }
        // Packing: 40 small streams share host clusters, so the file is far smaller than 40 clusters of data.
        Assert.True(device.Length < 20L * cs + 8 * cs, $"file is {device.Length} bytes");
    }

    [Fact]
    public void IncompressibleClusterIsStoredPlain()
    {
        var device = Create(1L << 20);
        var noise = new byte[65536];
        new Random(5).NextBytes(noise);
        using var image = Open(device);
        image.WriteCompressed(65536, noise);
        var status = image.GetBlockStatus(65536, 65536);
        Assert.False(status.Compressed);
        Assert.True(status.Data && status.HasHostOffset);
        var back = new byte[65536];
        image.Read(65536, back.AsMemory());
        Assert.Equal(noise, back);
        Assert.True(image.Check().IsClean);
    }

    [Fact]
    public void OverwritingCompressedAndPlainClustersFreesTheOldStorage()
    {
        var device = Create(1L << 20);
        using (var image = Open(device))
        {
            image.Write(0, Compressible(65536, 1).AsSpan());
            image.WriteCompressed(0, Compressible(65536, 2));
            image.WriteCompressed(65536, Compressible(65536, 3));
            image.WriteCompressed(65536, Compressible(65536, 4));
            image.Write(65536, Compressible(4096, 5).AsSpan());
            image.Flush();
            var check = image.Check();
            Assert.True(check.IsClean, $"corruptions {check.Corruptions}, leaks {check.Leaks}");
        }
        using (var image = Open(device))
        {
            var back = new byte[65536];
            image.Read(0, back.AsMemory());
            Assert.Equal(Compressible(65536, 2), back);
            image.Read(65536, back.AsMemory());
            var expected = Compressible(65536, 4);
            Compressible(4096, 5).CopyTo(expected, 0);
            Assert.Equal(expected, back);
        }
    }

    [Fact]
    public void LastPartialClusterIsPaddedAndOthersMustBeWhole()
    {
        var device = Create(65536 + 1000);
        using var image = Open(device);
        Assert.Equal(65536 + 1024, image.Size); // rounded up to whole sectors, as qemu-img creates it
        var tail = Compressible(1024, 9);
        image.WriteCompressed(65536, tail);
        var back = new byte[1024];
        image.Read(65536, back.AsMemory());
        Assert.Equal(tail, back);
        var e = Assert.Throws<DiskImageException>(() => image.WriteCompressed(0, new byte[4096]));
        Assert.Equal(DiskImageErrorKind.InvalidArgument, e.Kind);
        Assert.Throws<DiskImageException>(() => image.WriteCompressed(512, new byte[65536]));
    }

    [Fact]
    public async Task ConcurrentCompressedWritersKeepRefcountsExact()
    {
        var device = Create(16L << 20, ("cluster_size", "4096"));
        using (var image = Open(device))
        {
            await Task.WhenAll(Enumerable.Range(0, 8).Select(t => Task.Run(async () =>
            {
                for (int i = t; i < 512; i += 8)
                    await image.WriteCompressedAsync(i * 4096L, Compressible(4096, i));
            })));
            image.Flush();
            var check = image.Check();
            Assert.True(check.IsClean, $"corruptions {check.Corruptions}, leaks {check.Leaks}");
        }
        using (var image = Open(device))
        {
            var back = new byte[4096];
            for (int i = 0; i < 512; i++)
            {
                image.Read(i * 4096L, back.AsMemory());
                Assert.True(Compressible(4096, i).AsSpan().SequenceEqual(back), $"cluster {i} differs");
            }
        }
    }
}
