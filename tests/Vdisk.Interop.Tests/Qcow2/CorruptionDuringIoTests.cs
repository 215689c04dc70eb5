using System.Buffers.Binary;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Interop.Tests.Qcow2;

/// <summary>Corruption found during I/O marks the image corrupt and stops writes; check -r all repairs and clears it.</summary>
public class CorruptionDuringIoTests
{
    private static string Make(TempDir dir)
    {
        var path = dir.File("c.qcow2");
        Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "qcow2", path, "16M").ExitCode);
        Assert.Equal(0, Tools.Run("qemu-io", "-c", "write -P 9 0 128k", path).ExitCode);
        return path;
    }

    private static void ZeroRefcountOf(string path, long cluster)
    {
        using var f = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
        RandomAccess.Write(f, new byte[2], 0x20000 + 2 * cluster);
    }

    [Fact]
    public void RefcountZeroOnAReferencedClusterMarksCorruptAndRepairFixesIt()
    {
        using var dir = new TempDir();
        var path = Make(dir);
        ZeroRefcountOf(path, 5); // the first data cluster (header, reftable, refblock, L1, L2 come first)
        using (var image = DiskImages.Open(path))
        {
            var e = Assert.Throws<CorruptImageException>(() => image.Write(4096, new byte[512].AsSpan()));
            Assert.Contains("refcount is 0", e.Message);
            Assert.Throws<CorruptImageException>(() => image.Write(1 << 20, new byte[512].AsSpan()));
            var back = new byte[4096];
            image.Read(0, back.AsSpan()); // reading still works
            Assert.All(back, b => Assert.Equal(9, b));
        }
        Assert.Contains("corrupt: true", Tools.Run("qemu-img", "info", path).StdOut);
        var refused = Assert.Throws<DiskImageException>(() => DiskImages.Open(path));
        Assert.Equal(DiskImageErrorKind.CorruptImage, refused.Kind);

        var fix = Tools.Vdisk("check", "-r", "all", path);
        Assert.True(fix.ExitCode == 0, fix.ToString());
        Assert.Contains("corrupt: false", Tools.Run("qemu-img", "info", path).StdOut);
        Assert.Equal(0, Tools.Run("qemu-img", "check", path).ExitCode);
        var read = Tools.Run("qemu-io", "-r", "-c", "read -P 9 0 128k", path);
        Assert.DoesNotContain("fail", read.StdOut);
    }

    [Fact]
    public void DataClusterPastTheEndOfTheFileIsNotWrittenInPlace()
    {
        using var dir = new TempDir();
        var path = Make(dir);
        long l2;
        using (var f = File.OpenHandle(path))
        {
            var b = new byte[8];
            RandomAccess.Read(f, b, 0x30000);
            l2 = (long)(BinaryPrimitives.ReadUInt64BigEndian(b) & 0x00FFFFFFFFFFFE00UL);
        }
        using (var f = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite))
        {
            var entry = new byte[8];
            BinaryPrimitives.WriteUInt64BigEndian(entry, (1UL << 63) | (1UL << 40)); // 1 TiB: far past the end
            RandomAccess.Write(f, entry, l2);
        }
        using (var image = DiskImages.Open(path))
        {
            var e = Assert.Throws<CorruptImageException>(() => image.Write(0, new byte[512].AsSpan()));
            Assert.Contains("past the end", e.Message);
        }
        Assert.True(new FileInfo(path).Length < 1L << 30, "the write must not have extended the file to 1 TiB");
        var fix = Tools.Vdisk("check", "-r", "all", path);
        Assert.True(fix.ExitCode == 0, fix.ToString());
        Assert.Equal(0, Tools.Run("qemu-img", "check", path).ExitCode);
    }

    [Fact]
    public void TheCommandLineSaysTheImageWasMarkedCorruptAsQemuIoDoes()
    {
        using var dir = new TempDir();
        var qemu = Make(dir);
        // The first data cluster's L2 entry points at the L1 table: writing guest data there would destroy metadata.
        using (var f = File.OpenHandle(qemu, FileMode.Open, FileAccess.ReadWrite))
        {
            var b = new byte[8];
            RandomAccess.Read(f, b, 0x30000);
            long l2 = (long)(BinaryPrimitives.ReadUInt64BigEndian(b) & 0x00FFFFFFFFFFFE00UL);
            BinaryPrimitives.WriteUInt64BigEndian(b, (1UL << 63) | 0x30000);
            RandomAccess.Write(f, b, l2);
        }
        var vdisk = dir.File("v.qcow2");
        File.Copy(qemu, vdisk);

        var expected = Tools.Run("qemu-io", "-c", "write 0 512", qemu);
        var actual = Tools.Vdisk("io", "-c", "write 0 512", "-c", "write 4k 512", vdisk);
        const string marking = "qcow2: Marking image as corrupt: Preventing invalid write on metadata (overlaps with active L1 table); " +
            "further corruption events will be suppressed\n";
        Assert.Equal(marking, expected.StdErr);
        Assert.Equal("write failed: Input/output error\n", expected.StdOut);
        // The same words as qemu-io for the write that found it; the next one is refused and says why.
        Assert.StartsWith(marking, actual.StdErr);
        Assert.Contains("qcow2: Image is corrupt; further writes are refused until it is repaired", actual.StdErr);
        Assert.Equal("write failed: Input/output error\nwrite failed: Input/output error\n", actual.StdOut);
        Assert.Equal(1, actual.ExitCode);
    }
}
