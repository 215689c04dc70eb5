using System.Buffers.Binary;
using Xunit;

namespace Vdisk.Interop.Tests.Cli;

/// <summary>`vdisk check` prints what `qemu-img check` prints and exits with the same status.</summary>
public class CheckCommandTests
{
    private static string Make(TempDir dir, bool leak)
    {
        var path = dir.File("c.qcow2");
        Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "qcow2", path, "16M").ExitCode);
        Assert.Equal(0, Tools.Run("qemu-io", "-c", "write -P 7 0 192k", "-c", "write -P 8 1M 64k", path).ExitCode);
        if (leak)
        {
            using var f = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
            RandomAccess.Write(f, new byte[8], 0x30000);
        }
        return path;
    }

    [Theory]
    [InlineData(false, "human")]
    [InlineData(true, "human")]
    [InlineData(false, "json")]
    [InlineData(true, "json")]
    public void SameOutputAndExitCodeAsQemuImg(bool leak, string output)
    {
        using var dir = new TempDir();
        var path = Make(dir, leak);
        var q = Tools.Run("qemu-img", "check", "--output=" + output, path);
        var v = Tools.Vdisk("check", "--output=" + output, path);
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(q.StdOut, v.StdOut);
        Assert.Equal(q.StdErr, v.StdErr);
    }

    [Theory]
    [InlineData("human")]
    [InlineData("json")]
    public void RepairLeaksMatchesQemuImg(string output)
    {
        using var dir = new TempDir();
        var path = Make(dir, leak: true);
        var copy = dir.File("copy.qcow2");
        File.Copy(path, copy);
        var q = Tools.Run("qemu-img", "check", "-r", "leaks", "--output=" + output, copy);
        var v = Tools.Vdisk("check", "-r", "leaks", "--output=" + output, path);
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(q.StdOut.Replace("copy.qcow2", "c.qcow2"), v.StdOut);
        Assert.Equal(q.StdErr, v.StdErr);
        Assert.Equal(0, Tools.Run("qemu-img", "check", path).ExitCode);
    }

    [Fact]
    public void CorruptionsGiveExitCode2AndRepairAllClearsThem()
    {
        using var dir = new TempDir();
        var path = Make(dir, leak: false);
        using (var f = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite)) RandomAccess.Write(f, new byte[65536], 0x20000);
        Assert.Equal(2, Tools.Vdisk("check", path).ExitCode);
        var fix = Tools.Vdisk("check", "-r", "all", path);
        Assert.True(fix.ExitCode == 0, fix.ToString());
        Assert.Contains("Double checking the fixed image now...", fix.StdOut);
        Assert.Equal(0, Tools.Run("qemu-img", "check", path).ExitCode);
        var read = Tools.Run("qemu-io", "-r", "-c", "read -P 7 0 192k", "-c", "read -P 8 1M 64k", path);
        Assert.DoesNotContain("fail", read.StdOut);
    }

    [Fact]
    public void RawImageCannotBeCheckedExit63()
    {
        using var dir = new TempDir();
        var path = dir.File("r.raw");
        Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "raw", path, "1M").ExitCode);
        var q = Tools.Run("qemu-img", "check", "-f", "raw", path);
        var v = Tools.Vdisk("check", "-f", "raw", path);
        Assert.Equal(63, q.ExitCode);
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(q.StdErr.Replace("qemu-img:", "vdisk:"), v.StdErr);
    }

    [Fact]
    public void BadRepairValueIsAUsageError()
    {
        var v = Tools.Vdisk("check", "-r", "everything", "x.qcow2");
        Assert.Equal(1, v.ExitCode);
        Assert.Contains("Unknown option value for -r", v.StdErr);
    }
}
