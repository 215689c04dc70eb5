using Xunit;

namespace Vdisk.Interop.Tests.Cli;

/// <summary>`vdisk io -c abort` leaves the image as a crash would, in the same state qemu-io's abort leaves.</summary>
public class AbortCrashTests
{
    [Theory]
    [InlineData("qemu-io")]
    [InlineData("vdisk")]
    public void AbortAfterWritesLeavesADirtyLazyRefcountImageThatRepairs(string tool)
    {
        using var dir = new TempDir();
        var path = dir.File("a.qcow2");
        Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", path, "16M").ExitCode);
        string[] args = { "-c", "write -P 0x5c 0 192k", "-c", "write -P 0x6d 5M 64k", "-c", "abort", path };
        var r = tool == "vdisk" ? Tools.Vdisk(new[] { "io" }.Concat(args).ToArray()) : Tools.Run("qemu-io", args);
        Assert.Equal(134, r.ExitCode);

        var info = Tools.Run("qemu-img", "info", path);
        Assert.Contains("cleanly shut down: no", info.StdOut);
        var vinfo = Tools.Vdisk("info", path);
        Assert.Contains("cleanly shut down: no", vinfo.StdOut);
        var check = Tools.Vdisk("check", path);
        Assert.NotEqual(0, check.ExitCode); // refcounts lag behind the tables: that is what the dirty bit says

        var repair = Tools.Vdisk("check", "-r", "all", path);
        Assert.True(repair.ExitCode == 0, repair.ToString());
        Assert.Equal(0, Tools.Run("qemu-img", "check", path).ExitCode);
        // qemu-io writes through by default, so both writes were durable before the abort.
        var read = Tools.Run("qemu-io", "-r", "-c", "read -P 0x5c 0 192k", "-c", "read -P 0x6d 5M 64k", path);
        Assert.DoesNotContain("fail", read.StdOut);
    }

    [Fact]
    public void OpeningADirtyImageReadWriteRepairsItAndSaysSo()
    {
        using var dir = new TempDir();
        var path = dir.File("d.qcow2");
        Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", path, "16M").ExitCode);
        Assert.Equal(134, Tools.Run("qemu-io", "-c", "write -P 1 0 64k", "-c", "abort", path).ExitCode);
        var r = Tools.Vdisk("io", "-c", "read -P 1 0 64k", path);
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("refcount=0 reference=1", r.StdErr); // the repair reports what it found, as QEMU does
        Assert.Contains("Rebuilding refcount structure", r.StdErr);
        Assert.DoesNotContain("cleanly shut down: no", Tools.Run("qemu-img", "info", path).StdOut);
        Assert.Equal(0, Tools.Run("qemu-img", "check", path).ExitCode);
    }
}
