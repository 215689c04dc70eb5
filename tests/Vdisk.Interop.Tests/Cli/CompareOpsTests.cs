using Vdisk.Interop.Tests.Qcow2;
using Xunit;

namespace Vdisk.Interop.Tests.Cli;

/// <summary>vdisk compare prints what qemu-img compare prints and exits with the same status.</summary>
public class CompareOpsTests
{
    private static string Make(TempDir dir, string name, string size, params string[] commands)
    {
        var path = dir.File(name);
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", path, size);
        if (commands.Length > 0) Qemu.Io(path, "qcow2", commands);
        return path;
    }

    [Theory]
    // identical content, different allocation (data vs zero cluster vs nothing)
    [InlineData("4M", "write -P 1 100k 4k", "4M", "write -P 1 100k 4k", "")]
    [InlineData("4M", "write -z 0 64k", "4M", "write -P 0 1M 64k", "")]
    [InlineData("4M", "write -z 0 64k", "4M", "write -P 0 1M 64k", "-s")]
    [InlineData("4M", "write -P 1 0 64k", "4M", "write -P 1 0 64k", "-s")]
    // a difference inside a sector, in the middle of a cluster
    [InlineData("4M", "write -P 1 100k 4k", "4M", "write -P 1 100k 4k;write -P 3 103000 1", "")]
    // data in one image where the other has nothing
    [InlineData("4M", "", "4M", "write -P 9 3000001 10", "")]
    // sizes differ: zeros past the end are fine, data is not, strict refuses either
    [InlineData("4M", "write -P 1 0 4k", "8M", "write -P 1 0 4k", "")]
    [InlineData("4M", "write -P 1 0 4k", "8M", "write -P 1 0 4k;write -z 5M 1M", "")]
    [InlineData("4M", "write -P 1 0 4k", "8M", "write -P 1 0 4k;write -P 2 6001000 3", "")]
    [InlineData("8M", "write -P 1 0 4k;write -P 2 6001000 3", "4M", "write -P 1 0 4k", "")]
    [InlineData("4M", "", "8M", "", "-s")]
    [InlineData("4M", "write -P 1 0 4k", "4M", "write -P 2 0 4k", "-q")]
    [InlineData("4M", "write -P 1 0 4k", "4M", "write -P 1 0 4k", "-p")]
    public void AgreesWithQemuImgCompare(string size1, string io1, string size2, string io2, string options)
    {
        using var dir = new TempDir();
        var a = Make(dir, "a.qcow2", size1, io1.Split(';', StringSplitOptions.RemoveEmptyEntries));
        var b = Make(dir, "b.qcow2", size2, io2.Split(';', StringSplitOptions.RemoveEmptyEntries));
        string[] args = ["compare", .. options.Split(' ', StringSplitOptions.RemoveEmptyEntries), a, b];
        var q = Tools.Run("qemu-img", args);
        var v = Tools.Vdisk(args);
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(q.StdOut, v.StdOut);
        Assert.Equal(q.StdErr.Replace("qemu-img:", "vdisk:"), v.StdErr);
    }

    [Fact]
    public void RawAgainstQcow2AndAChainAgainstItsConversion()
    {
        using var dir = new TempDir();
        var top = OpsImages.Chain(dir);
        var raw = dir.File("flat.raw");
        Qemu.MustRun("qemu-img", "convert", "-O", "raw", top, raw);
        var same = Tools.Vdisk("compare", "-f", "raw", "-F", "qcow2", raw, top);
        Assert.True(same.ExitCode == 0, same.ToString());
        Assert.Equal("Images are identical.\n", same.StdOut);
        Qemu.Io(raw, "raw", new[] { "write -P 0x5a 14339k 1" });
        string[] args = ["compare", "-f", "raw", "-F", "qcow2", raw, top];
        var q = Tools.Run("qemu-img", args);
        var v = Tools.Vdisk(args);
        Assert.Equal(1, v.ExitCode);
        Assert.Equal(q.StdOut, v.StdOut);
    }

    [Fact]
    public void MissingFileExits2()
    {
        using var dir = new TempDir();
        var a = Make(dir, "a.qcow2", "1M");
        string[] args = ["compare", a, dir.File("missing.qcow2")];
        var q = Tools.Run("qemu-img", args);
        var v = Tools.Vdisk(args);
        Assert.Equal(2, v.ExitCode);
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(q.StdErr.Replace("qemu-img:", "vdisk:"), v.StdErr);
    }
}
