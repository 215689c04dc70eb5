using Vdisk.Interop.Tests.Qcow2;
using Xunit;

namespace Vdisk.Interop.Tests.Cli;

/// <summary>vdisk convert against qemu-img convert with the same options: identical content, clean qcow2 outputs.</summary>
public class ConvertOpsTests
{
    [Theory]
    [InlineData("chain", "-O raw")]
    [InlineData("chain", "-O qcow2")]
    [InlineData("chain", "-O qcow2 -S 0")]
    [InlineData("chain", "-O qcow2 -W -m 3")]
    [InlineData("chain", "-O qcow2 -o cluster_size=4k,compat=0.10")]
    [InlineData("chain", "-O qcow2 -o extended_l2=on -S 64k")]
    [InlineData("chain", "-O qcow2 -c")]
    [InlineData("chain", "-O qcow2 -c -o compression_type=zstd")]
    [InlineData("raw", "-O qcow2")]
    [InlineData("raw", "-O raw -S 0")]
    [InlineData("raw", "-O qcow2 -c -o compression_type=zstd,cluster_size=16k")]
    [InlineData("raw", "-f raw -O qcow2 -o preallocation=metadata")]
    public void MatchesQemuImgConvert(string source, string options)
    {
        using var dir = new TempDir();
        var src = source == "chain" ? OpsImages.Chain(dir) : OpsImages.Raw(dir);
        var opts = options.Split(' ');
        string outFormat = opts[Array.IndexOf(opts, "-O") + 1];
        var ours = dir.File("ours." + outFormat);
        var theirs = dir.File("theirs." + outFormat);
        OpsImages.MustVdisk(["convert", .. opts, src, ours]);
        Qemu.MustRun("qemu-img", ["convert", .. opts, src, theirs]);
        OpsImages.AssertIdentical(theirs, ours);
        OpsImages.AssertIdentical(src, ours);
        if (outFormat == "qcow2") OpsImages.AssertChecks(ours);
        if (options.Contains("-c"))
        {
            var check = Qemu.MustRun("qemu-img", "check", ours).StdOut;
            Assert.DoesNotContain(" 0.00% compressed", check);
        }
        if (options.Contains("-S 0"))
        {
            // Fully allocated: every cluster holds data, nothing is left as a hole or zero cluster.
            Assert.All(Qemu.Map(ours), r => Assert.True(r.Data, $"unallocated range {r} with -S 0"));
        }
    }

    [Theory]
    [InlineData("zlib")]
    [InlineData("zstd")]
    public void CompressedOutputReadsBackThroughQemuIo(string type)
    {
        using var dir = new TempDir();
        var src = OpsImages.Chain(dir);
        var ours = dir.File("c.qcow2");
        OpsImages.MustVdisk("convert", "-c", "-O", "qcow2", "-o", "compression_type=" + type, src, ours);
        Qemu.Io(ours, "qcow2", new[]
        {
            "read -P 0x11 0 1M", "read -P 0x21 1M 512k", "read -P 0x11 1536k 1536k", "read -P 0 8M 256k",
            "read -P 0x12 8448k 768k", "read -P 0 14M 8k", "read -P 0x22 14344k 92k", "read -P 0x24 23M 1M",
        });
        Assert.Contains("compression type: " + type, Qemu.MustRun("qemu-img", "info", ours).StdOut);
        OpsImages.AssertChecks(ours);
    }

    [Fact]
    public void BackingOptionLeavesWhatTheTopDoesNotAllocateToTheNewBacking()
    {
        using var dir = new TempDir();
        var src = OpsImages.Chain(dir);
        var ours = dir.File("ours.qcow2");
        var theirs = dir.File("theirs.qcow2");
        string[] opts = ["-O", "qcow2", "-B", "base-top.qcow2", "-F", "qcow2"];
        OpsImages.MustVdisk(["convert", .. opts, src, ours]);
        Qemu.MustRun("qemu-img", ["convert", .. opts, src, theirs]);
        OpsImages.AssertIdentical(theirs, ours);
        OpsImages.AssertChecks(ours);
        // The base's data at 0 (not in the top layer) must come from the backing file, at depth 1.
        var first = Qemu.Map(ours)[0];
        Assert.True(first.Depth == 1 && first.Data, $"first range {first}");
        Assert.Equal(Qemu.Map(theirs).Where(r => r.Depth == 0 && r.Data).Sum(r => r.Length),
            Qemu.Map(ours).Where(r => r.Depth == 0 && r.Data).Sum(r => r.Length));
    }

    [Fact]
    public void SeveralSourcesAreConcatenated()
    {
        using var dir = new TempDir();
        var a = OpsImages.Raw(dir, "a.raw");
        var b = OpsImages.Chain(dir, "b.qcow2");
        var ours = dir.File("ours.qcow2");
        var theirs = dir.File("theirs.qcow2");
        OpsImages.MustVdisk("convert", "-O", "qcow2", a, b, a, ours);
        Qemu.MustRun("qemu-img", "convert", "-O", "qcow2", a, b, a, theirs);
        OpsImages.AssertIdentical(theirs, ours);
        OpsImages.AssertChecks(ours);
    }

    [Fact]
    public void ExistingTargetIsOverwrittenWithDashN()
    {
        using var dir = new TempDir();
        var src = OpsImages.Chain(dir);
        var target = dir.File("t.qcow2");
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", target, "24M");
        Qemu.Io(target, "qcow2", new[] { "write -P 0x77 0 24M" });
        OpsImages.MustVdisk("convert", "-n", "-O", "qcow2", src, target);
        OpsImages.AssertIdentical(src, target);
        OpsImages.AssertChecks(target);
    }

    [Theory]
    [InlineData("-m", "17")]
    [InlineData("-m", "0")]
    [InlineData("-S", "1000")]
    [InlineData("--target-is-zero", null)]
    [InlineData("-c", null)]
    public void BadOptionsFailAsQemuImg(string option, string? value)
    {
        using var dir = new TempDir();
        var src = OpsImages.Raw(dir);
        string[] args = value is null ? ["convert", option, src, dir.File("o.raw")] : ["convert", option, value, src, dir.File("o.raw")];
        var q = Tools.Run("qemu-img", args);
        var v = Tools.Vdisk(args);
        Assert.Equal(1, q.ExitCode);
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(q.StdErr.Replace("qemu-img:", "vdisk:"), v.StdErr);
    }

    [Fact]
    public void ProgressPrintsQemuLinesWhenNotATerminal()
    {
        using var dir = new TempDir();
        var src = OpsImages.Raw(dir);
        var r = OpsImages.MustVdisk("convert", "-p", "-O", "qcow2", src, dir.File("o.qcow2"));
        Assert.StartsWith("    (0.00/100%)\r", r.StdOut);
        Assert.EndsWith("    (100.00/100%)\r\n", r.StdOut);
        Assert.Equal("", OpsImages.MustVdisk("convert", "-p", "-q", "-O", "qcow2", src, dir.File("p.qcow2")).StdOut);
    }
}
