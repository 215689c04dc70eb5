using Vdisk.Interop.Tests.Qcow2;
using Xunit;

namespace Vdisk.Interop.Tests.Cli;

/// <summary>vdisk amend against qemu-img amend on a twin copy of the same images.</summary>
public class AmendOpsTests
{
    /// <summary>A standalone v3 image with data, plain and preallocated zero clusters, and OpsImages.Chain's top.</summary>
    private static void Setup(TempDir dir, string createOptions = "compat=1.1")
    {
        var solo = dir.File("solo.qcow2");
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", "-o", createOptions, solo, "4M");
        Qemu.Io(solo, "qcow2", new[] { "write -P 1 0 64k", "write -z 64k 64k", "write -P 2 2M 64k", "write -z 2M 64k", "write -P 3 3M 100k" });
        OpsImages.Chain(dir);
    }

    [Theory]
    [InlineData("solo.qcow2", "compat=0.10")]
    [InlineData("top.qcow2", "compat=0.10")]
    [InlineData("solo.qcow2", "lazy_refcounts=on")]
    [InlineData("solo.qcow2", "compat=1.1,lazy_refcounts=on,size=6M")]
    [InlineData("solo.qcow2", "size=2M")]
    [InlineData("solo.qcow2", "refcount_bits=1")]
    [InlineData("top.qcow2", "refcount_bits=8")]
    [InlineData("solo.qcow2", "refcount_bits=64,lazy_refcounts=on")]
    public void AmendMatchesQemuImg(string name, string options)
    {
        using var dir = new TempDir();
        Setup(dir, options.StartsWith("compat=1.1") ? "compat=0.10" : "compat=1.1");
        var twin = ChainCopies.Twin(dir, "q");
        var ours = Tools.VdiskIn(dir.Path_, "amend", "-o", options, name);
        var theirs = Tools.RunWithTimeout("qemu-img", ["amend", "-o", options, name], TimeSpan.FromMinutes(1), twin);
        Assert.True(ours.ExitCode == 0, ours.ToString());
        Assert.Equal(theirs.ToString(), ours.ToString());
        var path = dir.File(name);
        OpsImages.AssertChecks(path);
        Assert.Equal(FormatSpecific(Path.Combine(twin, name)), FormatSpecific(path));
        Assert.Equal(ChainCopies.Guest(Path.Combine(twin, name)), ChainCopies.Guest(path));
        Assert.Equal(ChainCopies.TopLayer(Path.Combine(twin, name)), ChainCopies.TopLayer(path));
        if (options.Contains("0.10")) Assert.Contains("compat: 0.10", FormatSpecific(path));
        if (name == "solo.qcow2" && !options.Contains("size=2M")) Qemu.Io(path, "qcow2", new[] { "read -P 1 0 64k", "read -P 0 64k 64k", "read -P 0 2M 64k", "read -P 3 3M 100k" });
    }

    [Fact]
    public void LazyRefcountsOffOnADirtyImageRepairsAndMarksItClean()
    {
        using var dir = new TempDir();
        var path = dir.File("lazy.qcow2");
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", path, "4M");
        // qemu-io's abort leaves the dirty bit set and the refcounts behind the L2 tables.
        Tools.Run("qemu-io", "-c", "write -P 7 0 256k", "-c", "abort", path);
        Assert.Contains("\"dirty-flag\": true", Qemu.MustRun("qemu-img", "info", "--output=json", path).StdOut);
        OpsImages.MustVdisk("amend", "-o", "lazy_refcounts=off", path);
        var info = Qemu.MustRun("qemu-img", "info", "--output=json", path).StdOut;
        Assert.Contains("\"dirty-flag\": false", info);
        Assert.Contains("\"lazy-refcounts\": false", info);
        OpsImages.AssertChecks(path);
        Qemu.Io(path, "qcow2", new[] { "read -P 7 0 256k" });
    }

    [Theory]
    [InlineData("-o", "cluster_size=4k", "solo.qcow2")]
    [InlineData("-o", "extended_l2=on", "solo.qcow2")]
    [InlineData("-o", "foo=1", "solo.qcow2")]
    [InlineData("-o", "compat=2", "solo.qcow2")]
    [InlineData("-o", "refcount_bits=7", "solo.qcow2")]
    [InlineData("-o", "compat=0.10,refcount_bits=8", "solo.qcow2")]
    [InlineData("solo.qcow2")]
    [InlineData("-f", "raw", "-o", "size=8M", "solo.qcow2")]
    public void FailuresMatchQemuImg(params string[] args)
    {
        using var dir = new TempDir();
        Setup(dir);
        var twin = ChainCopies.Twin(dir, "q");
        var ours = Tools.VdiskIn(dir.Path_, ["amend", .. args]);
        var theirs = Tools.RunWithTimeout("qemu-img", ["amend", .. args], TimeSpan.FromMinutes(1), twin);
        ChainCopies.AssertSameResult(theirs, ours);
        Assert.NotEqual(0, ours.ExitCode);
        Assert.Equal(File.ReadAllBytes(Path.Combine(twin, "solo.qcow2")), File.ReadAllBytes(dir.File("solo.qcow2")));
    }

    /// <summary>qemu-img 7.2 refuses this ("use rebase"); the issue asks amend to do it: what rebase -u does.</summary>
    [Fact]
    public void AmendChangesTheBackingFileLikeRebaseUnsafe()
    {
        using var dir = new TempDir();
        Setup(dir);
        var other = dir.File("other.qcow2");
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", other, "8M");
        var ours = Tools.VdiskIn(dir.Path_, "amend", "-o", "backing_file=other.qcow2,backing_fmt=qcow2", "solo.qcow2");
        Assert.True(ours.ExitCode == 0, ours.ToString());
        var info = Qemu.MustRun("qemu-img", "info", "--output=json", dir.File("solo.qcow2")).StdOut;
        Assert.Contains("\"backing-filename\": \"other.qcow2\"", info);
        Assert.Contains("\"backing-filename-format\": \"qcow2\"", info);
        OpsImages.AssertChecks(dir.File("solo.qcow2"));
        var detach = Tools.VdiskIn(dir.Path_, "amend", "-o", "backing_file=", "solo.qcow2");
        Assert.True(detach.ExitCode == 0, detach.ToString());
        Assert.DoesNotContain("backing-filename", Qemu.MustRun("qemu-img", "info", "--output=json", dir.File("solo.qcow2")).StdOut);
        var noFormat = Tools.VdiskIn(dir.Path_, "amend", "-o", "backing_file=other.qcow2", "solo.qcow2");
        Assert.NotEqual(0, noFormat.ExitCode);
    }

    [Fact]
    public void NarrowerRefcountsThanTheLargestRefcountAreRefusedAsQemuImgDoes()
    {
        using var dir = new TempDir();
        Setup(dir);
        Qemu.MustRun("qemu-img", "snapshot", "-c", "s1", dir.File("solo.qcow2"));
        var twin = ChainCopies.Twin(dir, "q");
        var ours = Tools.VdiskIn(dir.Path_, "amend", "-o", "refcount_bits=1", "solo.qcow2");
        var theirs = Tools.RunWithTimeout("qemu-img", ["amend", "-o", "refcount_bits=1", "solo.qcow2"], TimeSpan.FromMinutes(1), twin);
        ChainCopies.AssertSameResult(theirs, ours);
        Assert.Contains("has a refcount of 2", ours.StdErr);
        Assert.Equal(File.ReadAllBytes(Path.Combine(twin, "solo.qcow2")), File.ReadAllBytes(dir.File("solo.qcow2")));
    }

    private static string FormatSpecific(string path)
    {
        var info = Qemu.MustRun("qemu-img", "info", path).StdOut;
        // Disk sizes differ: the twin's files are plain (not sparse) copies.
        return string.Join("\n", info.Split('\n').Where(l => !l.StartsWith("disk size") && !l.StartsWith("image:") && !l.StartsWith("backing file:")));
    }
}
