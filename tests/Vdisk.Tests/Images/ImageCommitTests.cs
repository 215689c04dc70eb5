using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Tests.Images;

/// <summary><see cref="ImageCommit"/> on a chain in memory, opened through <see cref="ImageOpenOptions.BackingOpener"/>.</summary>
public class ImageCommitTests
{
    private const int Cluster = 65536;

    private static MemoryBlockDevice Create(long size, string name, string? backing = null)
    {
        var device = new MemoryBlockDevice(0, name);
        var options = new Dictionary<string, string>();
        if (backing is not null) options["backing_file"] = backing;
        new Qcow2Format().Create(device, new ImageCreateOptions { Size = size, Options = options });
        return device;
    }

    private static Qcow2Image OpenChain(MemoryBlockDevice top, MemoryBlockDevice baseFile, bool readOnly = false) =>
        Qcow2Image.Open(new BorrowedBlockDevice(top), new ImageOpenOptions
        {
            ReadOnly = readOnly,
            BackingOpener = (_, options) => Qcow2Image.Open(new BorrowedBlockDevice(baseFile), options),
        });

    private static byte[] ReadAll(DiskImage image)
    {
        var data = new byte[image.Size];
        image.Read(0, data.AsMemory());
        return data;
    }

    private static byte[] Filled(int length, byte value) => Enumerable.Repeat(value, length).ToArray();

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void BaseReadsWhatTheTopReadAndTheEmptiedTopReadsThrough(bool smallerBase)
    {
        var baseFile = Create(smallerBase ? 2 << 20 : 4 << 20, "base.qcow2");
        using (var b = Qcow2Image.Open(new BorrowedBlockDevice(baseFile), new ImageOpenOptions()))
        {
            b.Write(0, Filled(3 * Cluster, 0xB0).AsSpan());
            b.Write(20 * Cluster, Filled(Cluster, 0xB1).AsSpan());
        }
        var topFile = Create(4 << 20, "top.qcow2", "base.qcow2");
        byte[] expected;
        using (var top = OpenChain(topFile, baseFile))
        {
            Assert.NotNull(top.Backing);
            top.Write(Cluster + 100, Filled(5000, 0x70).AsSpan());   // over base data, not cluster-aligned
            top.WriteZeroes(2 * Cluster, Cluster);                     // zeros over base data
            top.Write(50 * Cluster, Filled(2 * Cluster, 0x71).AsSpan()); // past a smaller base's end
            expected = ReadAll(top);

            var progress = 0L;
            using (var target = Qcow2Image.Open(new BorrowedBlockDevice(baseFile), new ImageOpenOptions()))
                ImageCommit.CopyIntoBase(top, top.Backing!, target, n => progress += n);
            Assert.Equal(top.Size, progress);
            ImageCommit.EmptyTop(top);
        }

        using (var b = Qcow2Image.Open(new BorrowedBlockDevice(baseFile), new ImageOpenOptions { ReadOnly = true }))
        {
            Assert.Equal(4 << 20, b.Size);
            Assert.Equal(expected, ReadAll(b));
            Assert.True(b.Check().IsClean);
        }
        using (var top = OpenChain(topFile, baseFile, readOnly: true))
        {
            Assert.Equal(expected, ReadAll(top));
            var status = top.GetLayerStatus(0, top.Size);
            Assert.Equal((top.Size, LayerAllocation.Unallocated), (status.Length, status.Allocation));
            Assert.True(top.Check().IsClean);
        }
    }

    [Fact]
    public void CommitsIntoADeeperLayerWhatEveryLayerAboveItAllocates()
    {
        var baseFile = Create(1 << 20, "base.qcow2");
        var midFile = Create(1 << 20, "mid.qcow2", "base.qcow2");
        var topFile = Create(1 << 20, "top.qcow2", "mid.qcow2");
        var files = new Dictionary<string, MemoryBlockDevice> { ["base.qcow2"] = baseFile, ["mid.qcow2"] = midFile };
        Func<string, ImageOpenOptions, DiskImage> opener = (name, options) => Qcow2Image.Open(new BorrowedBlockDevice(files[name]), options);
        using (var mid = Qcow2Image.Open(new BorrowedBlockDevice(midFile), new ImageOpenOptions { BackingOpener = opener }))
            mid.Write(0, Filled(Cluster, 0x33).AsSpan());
        using var top = Qcow2Image.Open(new BorrowedBlockDevice(topFile), new ImageOpenOptions { BackingOpener = opener });
        top.Write(4 * Cluster, Filled(Cluster, 0x44).AsSpan());
        var expected = ReadAll(top);

        using (var target = Qcow2Image.Open(new BorrowedBlockDevice(baseFile), new ImageOpenOptions()))
            ImageCommit.CopyIntoBase(top, top.Backing!.Backing!, target);
        using var b = Qcow2Image.Open(new BorrowedBlockDevice(baseFile), new ImageOpenOptions { ReadOnly = true });
        Assert.Equal(expected, ReadAll(b));
        Assert.Throws<ArgumentException>(() => ImageCommit.CopyIntoBase(top, b, b));
        Assert.Throws<ArgumentException>(() => ImageCommit.CopyIntoBase(top, top, b));
    }
}
