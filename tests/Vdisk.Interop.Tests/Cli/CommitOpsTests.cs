using Vdisk.Interop.Tests.Qcow2;
using Xunit;

namespace Vdisk.Interop.Tests.Cli;

/// <summary>vdisk commit against qemu-img commit on a twin copy of a three-layer chain.</summary>
public class CommitOpsTests
{
    /// <summary>base ← mid ← top.qcow2 (OpsImages.Chain's top over a middle layer of its own).</summary>
    private static string Setup(TempDir dir)
    {
        var top = OpsImages.Chain(dir);
        var mid = dir.File("mid.qcow2");
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base-top.qcow2", "-F", "qcow2", mid);
        Qemu.Io(mid, "qcow2", new[] { "write -P 0x51 4M 1M", "write -P 0x52 1M 64k", "write -z 20M 64k" });
        Qemu.MustRun("qemu-img", "rebase", "-u", "-b", "mid.qcow2", "-F", "qcow2", top);
        return top;
    }

    [Theory]
    [InlineData("")]
    [InlineData("-d")]
    [InlineData("-b base-top.qcow2")]
    public void CommitMatchesQemuImg(string optionText)
    {
        var options = optionText.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        using var dir = new TempDir();
        var top = Setup(dir);
        var twin = ChainCopies.Twin(dir, "q");
        var before = ChainCopies.Guest(top);
        var topLayer = ChainCopies.TopLayer(top);

        var ours = Tools.VdiskIn(dir.Path_, ["commit", .. options, "top.qcow2"]);
        var theirs = Tools.RunWithTimeout("qemu-img", ["commit", .. options, "top.qcow2"], TimeSpan.FromMinutes(1), twin);
        Assert.True(ours.ExitCode == 0, ours.ToString());
        Assert.Equal(theirs.StdOut, ours.StdOut);
        Assert.Equal("Image committed.\n", ours.StdOut);

        foreach (var name in new[] { "top.qcow2", "mid.qcow2", "base-top.qcow2" })
        {
            OpsImages.AssertChecks(dir.File(name));
            Assert.Equal(ChainCopies.Guest(Path.Combine(twin, name)), ChainCopies.Guest(dir.File(name)));
        }
        Assert.Equal(before, ChainCopies.Guest(top));
        Assert.Equal(ChainCopies.TopLayer(Path.Combine(twin, "top.qcow2")), ChainCopies.TopLayer(top));
        if (options.Length == 0) Assert.Equal("", ChainCopies.TopLayer(top));
        else Assert.Equal(topLayer, ChainCopies.TopLayer(top));
        // The committed layer holds the top's data itself, read through qemu-io.
        var target = options.Length == 2 ? dir.File("base-top.qcow2") : dir.File("mid.qcow2");
        Qemu.Io(target, "qcow2", new[] { "read -P 0x21 1M 512k", "read -P 0x24 23M 1M", "read -P 0 8M 256k" });
    }

    [Theory]
    [InlineData("base-top.qcow2")]
    [InlineData("-b", "nowhere.qcow2", "top.qcow2")]
    [InlineData("-b", "top.qcow2", "top.qcow2")]
    public void FailuresMatchQemuImg(params string[] args)
    {
        using var dir = new TempDir();
        Setup(dir);
        var twin = ChainCopies.Twin(dir, "q");
        var ours = Tools.VdiskIn(dir.Path_, ["commit", .. args]);
        var theirs = Tools.RunWithTimeout("qemu-img", ["commit", .. args], TimeSpan.FromMinutes(1), twin);
        ChainCopies.AssertSameResult(theirs, ours);
        Assert.NotEqual(0, ours.ExitCode);
    }

    /// <summary>
    /// qemu-iotests 020, "commit in sub-directory with relative filenames": -b names the base relative to the overlay's
    /// folder (as backing file names are), not to the current directory; an absolute name works too.
    /// </summary>
    [Fact]
    public void RelativeBaseNameIsResolvedFromTheOverlaysFolderAsIotest020()
    {
        using var dir = new TempDir();
        foreach (var tool in new[] { "q", "v" })
        {
            var sub = Path.Combine(dir.Path_, tool, "subdir");
            Directory.CreateDirectory(sub);
            Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", Path.Combine(sub, "t.qcow2.base"), "1M");
            Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", "-b", "t.qcow2.base", "-F", "qcow2", Path.Combine(sub, "t.qcow2.mid"));
            Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", "-b", "t.qcow2.mid", "-F", "qcow2", Path.Combine(sub, "t.qcow2"));
            Qemu.Io(Path.Combine(sub, "t.qcow2"), "qcow2", new[] { "write -P 0x33 0 64k" });
        }
        foreach (var name in new[] { "t.qcow2.mid", "subdir/t.qcow2.mid", "{0}/subdir/t.qcow2.mid" })
        {
            var theirs = Tools.RunWithTimeout("qemu-img", ["commit", "-b", string.Format(name, dir.File("q")), "subdir/t.qcow2"],
                TimeSpan.FromMinutes(1), dir.File("q"));
            var ours = Tools.VdiskIn(dir.File("v"), "commit", "-b", string.Format(name, dir.File("v")), "subdir/t.qcow2");
            ChainCopies.AssertSameResult(theirs, ours);
        }
        Qemu.Io(dir.File("v/subdir/t.qcow2.mid"), "qcow2", new[] { "read -P 0x33 0 64k" });
    }

    /// <summary>
    /// qemu-iotests 313: an overlay of zeros committed into its base frees the base's clusters (zeros with unmap),
    /// while data that happens to be zeros stays data, as qemu-img's commit job writes it.
    /// </summary>
    [Theory]
    [InlineData("write -z 0 8347648")]
    [InlineData("write -z 0 256k", "write -P 0 512k 256k", "write -z 1M 6k")]
    public void ZerosCommittedIntoTheBaseFreeItsClustersAsIotest313(params string[] writes)
    {
        using var dir = new TempDir();
        foreach (var tool in new[] { "q", "v" })
        {
            Directory.CreateDirectory(dir.File(tool));
            var b = Path.Combine(dir.File(tool), "t.qcow2.base");
            Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096,refcount_bits=64", b, "8347648");
            Qemu.Io(b, "qcow2", new[] { "write -P 1 0 8347648" });
            Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096,refcount_bits=64", "-b", "t.qcow2.base", "-F", "qcow2",
                Path.Combine(dir.File(tool), "t.qcow2"));
            Qemu.Io(Path.Combine(dir.File(tool), "t.qcow2"), "qcow2", writes);
        }
        Qemu.MustRun("qemu-img", "commit", "-q", dir.File("q/t.qcow2"));
        var ours = Tools.Vdisk("commit", "-q", dir.File("v/t.qcow2"));
        Assert.True(ours.ExitCode == 0, ours.ToString());

        var theirs = Tools.Run("qemu-img", "check", dir.File("q/t.qcow2.base"));
        var check = Tools.Run("qemu-img", "check", dir.File("v/t.qcow2.base"));
        Assert.Equal(theirs.ToString(), check.ToString());
        Assert.Equal(Qemu.Map(dir.File("q/t.qcow2.base")), Qemu.Map(dir.File("v/t.qcow2.base")));
        Assert.Equal(0, Tools.Run("qemu-img", "compare", dir.File("q/t.qcow2.base"), dir.File("v/t.qcow2.base")).ExitCode);
    }
}
