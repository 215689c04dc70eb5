using Vdisk.Interop.Tests.Qcow2;
using Xunit;

namespace Vdisk.Interop.Tests.Cli;

/// <summary>vdisk rebase against qemu-img rebase on a twin copy of the same chain.</summary>
public class RebaseOpsTests
{
    /// <summary>OpsImages.Chain plus "new.qcow2": some of the old base's data, some different, and a longer tail.</summary>
    private static string Setup(TempDir dir)
    {
        var top = OpsImages.Chain(dir);
        var fresh = dir.File("new.qcow2");
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", fresh, "32M");
        Qemu.Io(fresh, "qcow2", new[] { "write -P 0x11 0 2M", "write -P 0x41 2M 2M", "write -P 0x42 20M 64k", "write -P 0x43 26M 1M" });
        return top;
    }

    [Theory]
    [InlineData("new.qcow2")]
    [InlineData("")]
    public void SafeRebaseKeepsTheGuestViewAndMatchesQemuImg(string backing)
    {
        using var dir = new TempDir();
        var top = Setup(dir);
        var twin = ChainCopies.Twin(dir, "q");
        var before = ChainCopies.Guest(top);

        var ours = OpsImages.MustVdisk("rebase", "-b", backing, "-F", "qcow2", top);
        Qemu.MustRun("qemu-img", "rebase", "-b", backing, "-F", "qcow2", Path.Combine(twin, "top.qcow2"));

        Assert.Equal("", ours.StdOut);
        OpsImages.AssertChecks(top);
        ChainCopies.AssertInfo(top, backing == "" ? null : backing, backing == "" ? null : "qcow2");
        Assert.Equal(before, ChainCopies.Guest(top));
        Assert.Equal(ChainCopies.TopLayer(Path.Combine(twin, "top.qcow2")), ChainCopies.TopLayer(top));
        // Data read through qemu-io: old base data the new backing lacks is now in the top image.
        Qemu.Io(top, "qcow2", new[] { "read -P 0x11 2M 1M", "read -P 0x12 8650752 768k", "read -P 0x13 20M 512k" });
    }

    [Fact]
    public void UnsafeRebaseOnlyRewritesTheName()
    {
        using var dir = new TempDir();
        var top = Setup(dir);
        var layer = ChainCopies.TopLayer(top);
        OpsImages.MustVdisk("rebase", "-u", "-b", "new.qcow2", "-F", "qcow2", top);
        OpsImages.AssertChecks(top);
        ChainCopies.AssertInfo(top, "new.qcow2", "qcow2");
        Assert.Equal(layer, ChainCopies.TopLayer(top));
        Qemu.Io(top, "qcow2", new[] { "read -P 0x41 2M 1M", "read -P 0x42 20M 64k" });

        OpsImages.MustVdisk("rebase", "-u", top);
        ChainCopies.AssertInfo(top, null, null);
        Assert.Equal(layer, ChainCopies.TopLayer(top));
    }

    [Fact]
    public void LongBackingNamesAndUnknownExtensionsSurviveTheHeaderRewrite()
    {
        using var dir = new TempDir();
        var top = Setup(dir);
        var longName = new string('n', 200) + ".qcow2";
        File.Copy(dir.File("new.qcow2"), dir.File(longName));
        OpsImages.MustVdisk("rebase", "-b", longName, "-F", "qcow2", top);
        ChainCopies.AssertInfo(top, longName, "qcow2");
        OpsImages.AssertChecks(top);
        OpsImages.MustVdisk("rebase", "-u", "-b", "new.qcow2", "-F", "qcow2", top);
        ChainCopies.AssertInfo(top, "new.qcow2", "qcow2");
        var info = Qemu.MustRun("qemu-img", "info", top).StdOut;
        Assert.Contains("compat: 1.1", info);
    }

    [Theory]
    [InlineData("rebase")]
    [InlineData("rebase", "-b", "new.qcow2")]
    [InlineData("rebase", "-u", "-b", "new.qcow2")]
    [InlineData("rebase", "-b", "missing.qcow2", "-F", "qcow2")]
    [InlineData("rebase", "-u", "-b", "new.qcow2", "-F", "qcow2", "-f", "raw", "new.qcow2")]
    public void FailuresMatchQemuImg(params string[] args)
    {
        using var dir = new TempDir();
        Setup(dir);
        var withFile = args.Contains("-f") ? args : [.. args, "top.qcow2"];
        var theirsDir = ChainCopies.Twin(dir, "q");
        var ours = Tools.VdiskIn(dir.Path_, withFile);
        var theirs = Tools.RunWithTimeout("qemu-img", withFile, TimeSpan.FromMinutes(1), theirsDir);
        ChainCopies.AssertSameResult(theirs, ours);
        Assert.NotEqual(0, ours.ExitCode);
    }
}
