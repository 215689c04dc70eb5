using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Tests.Formats.Qcow2;

/// <summary>l2-cache-size is in bytes, as in QEMU: 1 MiB of 64 KiB L2 tables maps 8 GiB.</summary>
public class L2CacheSizeTests
{
    [Fact]
    public void OneMebibyteCoversEightGibibytesWithoutRereadingTables()
    {
        const long size = 8L << 30;
        var device = new MemoryBlockDevice();
        new Qcow2Format().Create(device, new ImageCreateOptions { Size = size });
        var options = new ImageOpenOptions { Options = new Dictionary<string, string> { ["l2-cache-size"] = (1 << 20).ToString() } };
        using var image = (Qcow2Image)Qcow2Image.Open(new BorrowedBlockDevice(device), options);
        Assert.Equal(16, image.L2CacheCapacity);

        // Touch one cluster in each 512 MiB stretch (one L2 table each), then go round again: no table is read twice.
        var data = new byte[4096];
        for (long off = 0; off < size; off += 512L << 20) image.Write(off + 65536, data.AsSpan());
        long missesAfterFirstPass = image.L2CacheMisses;
        for (int round = 0; round < 3; round++)
            for (long off = 0; off < size; off += 512L << 20) image.Read(off + 65536, data.AsSpan());
        Assert.Equal(missesAfterFirstPass, image.L2CacheMisses);
    }

    [Fact]
    public void SmallerCacheThanTheWorkingSetRereadsTables()
    {
        const long size = 8L << 30;
        var device = new MemoryBlockDevice();
        new Qcow2Format().Create(device, new ImageCreateOptions { Size = size });
        var options = new ImageOpenOptions { Options = new Dictionary<string, string> { ["l2-cache-size"] = (512 << 10).ToString() } };
        using var image = (Qcow2Image)Qcow2Image.Open(new BorrowedBlockDevice(device), options);
        var data = new byte[4096];
        for (long off = 0; off < size; off += 512L << 20) image.Write(off, data.AsSpan());
        long misses = image.L2CacheMisses;
        for (long off = 0; off < size; off += 512L << 20) image.Read(off, data.AsSpan());
        Assert.True(image.L2CacheMisses > misses, "an 8-table cache cannot hold 16 tables");
    }
}
