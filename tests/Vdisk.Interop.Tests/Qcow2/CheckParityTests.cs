using System.Buffers.Binary;
using System.Text.Json;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Interop.Tests.Qcow2;

/// <summary>Vdisk's check finds what qemu-img check finds, and its repairs leave images qemu-img calls clean.</summary>
public class CheckParityTests
{
    private static (TempDir Dir, string Path) MakeImage(string extra = "")
    {
        var dir = new TempDir();
        var path = dir.File("img.qcow2");
        var args = new List<string> { "create", "-q", "-f", "qcow2" };
        if (extra != "") { args.Add("-o"); args.Add(extra); }
        args.Add(path); args.Add("16M");
        Assert.Equal(0, Tools.Run("qemu-img", args.ToArray()).ExitCode);
        var io = Tools.Run("qemu-io", "-c", "write -P 0x11 0 256k", "-c", "write -P 0x22 4M 64k", "-c", "write -P 0x33 9M 128k", path);
        Assert.Equal(0, io.ExitCode);
        return (dir, path);
    }

    private static JsonElement QemuCheck(string path, out int exitCode)
    {
        var r = Tools.Run("qemu-img", "check", "--output=json", path);
        exitCode = r.ExitCode;
        return JsonDocument.Parse(r.StdOut).RootElement;
    }

    private static int Int(JsonElement e, string name) => e.TryGetProperty(name, out var v) ? v.GetInt32() : 0;

    private static void Patch(string path, long offset, ulong value)
    {
        using var f = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
        var b = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(b, value);
        RandomAccess.Write(f, b, offset);
    }

    private static ulong Peek(string path, long offset)
    {
        using var f = File.OpenHandle(path);
        var b = new byte[8];
        RandomAccess.Read(f, b, offset);
        return BinaryPrimitives.ReadUInt64BigEndian(b);
    }

    private static void AssertDataIntact(string path)
    {
        var r = Tools.Run("qemu-io", "-r", "-c", "read -P 0x11 0 256k", "-c", "read -P 0x22 4M 64k", "-c", "read -P 0x33 9M 128k", "-c", "read -P 0 256k 3840k", path);
        Assert.True(r.ExitCode == 0 && !r.StdOut.Contains("fail"), r.ToString());
    }

    [Fact]
    public void CleanImageMatchesQemuStatistics()
    {
        var (dir, path) = MakeImage();
        using var _ = dir;
        var q = QemuCheck(path, out int rc);
        Assert.Equal(0, rc);
        using var image = DiskImages.Open(path, new ImageOpenOptions { ReadOnly = true });
        var r = image.Check();
        Assert.True(r.IsClean, string.Join("\n", r.Messages));
        Assert.Equal(q.GetProperty("image-end-offset").GetInt64(), r.ImageEndOffset);
        Assert.Equal(q.GetProperty("total-clusters").GetInt64(), r.TotalClusters);
        Assert.Equal(Int(q, "allocated-clusters"), r.AllocatedClusters);
        Assert.Equal(Int(q, "fragmented-clusters"), r.FragmentedClusters);
    }

    [Fact]
    public void LeaksAreCountedLikeQemuAndRepairedWithRepairLeaks()
    {
        var (dir, path) = MakeImage();
        using var _ = dir;
        Patch(path, 0x30000 + 8 * 0, 0); // drop L1 entry 0: its L2 table and data clusters leak
        var q = QemuCheck(path, out int rc);
        Assert.Equal(3, rc);
        using (var image = DiskImages.Open(path, new ImageOpenOptions { ForCheck = true }))
        {
            var r = image.Check();
            Assert.Equal(Int(q, "leaks"), r.Leaks);
            Assert.Equal(0, r.Corruptions);
            var fixedResult = image.Check(CheckRepair.Leaks);
            Assert.Equal(r.Leaks, fixedResult.LeaksFixed);
            Assert.True(image.Check().IsClean);
        }
        QemuCheck(path, out rc);
        Assert.Equal(0, rc);
    }

    [Fact]
    public void ZeroedRefcountBlockIsRebuiltAndDataSurvives()
    {
        var (dir, path) = MakeImage();
        using var _ = dir;
        using (var f = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite)) RandomAccess.Write(f, new byte[65536], 0x20000);
        QemuCheck(path, out int rc);
        Assert.Equal(2, rc);
        using (var image = DiskImages.Open(path, new ImageOpenOptions { ForCheck = true }))
        {
            var before = image.Check();
            Assert.True(before.Corruptions > 0);
            var repaired = image.Check(CheckRepair.All);
            Assert.Equal(0, repaired.Corruptions);
            Assert.True(repaired.CorruptionsFixed > 0);
        }
        var after = Tools.Run("qemu-img", "check", path);
        Assert.True(after.ExitCode == 0, after.ToString());
        AssertDataIntact(path);
    }

    [Fact]
    public void WrongCopiedFlagIsReportedAndFixed()
    {
        var (dir, path) = MakeImage();
        using var _ = dir;
        ulong l1 = Peek(path, 0x30000);
        long l2 = (long)(l1 & 0x00FFFFFFFFFFFE00UL);
        Patch(path, l2, Peek(path, l2) & ~(1UL << 63));
        QemuCheck(path, out int rc);
        Assert.Equal(2, rc);
        using (var image = DiskImages.Open(path, new ImageOpenOptions { ForCheck = true }))
        {
            Assert.Equal(1, image.Check().Corruptions);
            var repaired = image.Check(CheckRepair.All);
            Assert.Equal(1, repaired.CorruptionsFixed);
        }
        QemuCheck(path, out rc);
        Assert.Equal(0, rc);
    }

    [Fact]
    public void RefcountTooLowIsAnErrorThatRepairAllFixes()
    {
        var (dir, path) = MakeImage();
        using var _ = dir;
        // The first data cluster (cluster 5: after header, reftable, refblock, L1, L2) gets refcount 0... then 2.
        using (var f = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite)) RandomAccess.Write(f, new byte[] { 0, 2 }, 0x20000 + 2 * 5);
        var q = QemuCheck(path, out int rc);
        using (var image = DiskImages.Open(path, new ImageOpenOptions { ForCheck = true }))
        {
            var r = image.Check();
            Assert.Equal(Int(q, "leaks"), r.Leaks);
            Assert.Equal(Int(q, "corruptions"), r.Corruptions);
            image.Check(CheckRepair.All);
        }
        QemuCheck(path, out rc);
        Assert.Equal(0, rc);
        AssertDataIntact(path);
    }

    [Fact]
    public void DataClusterPastEndOfFileIsRepairedToReadZeros()
    {
        var (dir, path) = MakeImage();
        using var _ = dir;
        long length = new FileInfo(path).Length;
        using (var f = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite)) RandomAccess.SetLength(f, length - 65536); // last data cluster gone
        QemuCheck(path, out int rc);
        Assert.Equal(2, rc); // QEMU 7.2 finds it and, with -r all, cannot repair it
        using (var image = DiskImages.Open(path, new ImageOpenOptions { ForCheck = true }))
        {
            var repaired = image.Check(CheckRepair.All);
            Assert.True(repaired.IsClean, string.Join("\n", repaired.Messages));
        }
        var after = Tools.Run("qemu-img", "check", path);
        Assert.True(after.ExitCode == 0, after.ToString());
    }
}
