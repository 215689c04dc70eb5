using Vdisk.Interop.Tests.Qcow2;
using Xunit;

namespace Vdisk.Interop.Tests.Cli;

/// <summary>vdisk measure prints qemu-img measure's numbers for sizes, cluster sizes, refcount widths and fill levels.</summary>
public class MeasureOpsTests
{
    private static void AssertSame(params string[] args)
    {
        string[] full = ["measure", .. args];
        var q = Tools.Run("qemu-img", full);
        var v = Tools.Vdisk(full);
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(q.StdOut, v.StdOut);
        Assert.Equal(q.StdErr.Replace("qemu-img:", "vdisk:"), v.StdErr);
    }

    [Fact]
    public void SizesClusterSizesAndRefcountWidths()
    {
        var failures = new List<string>();
        foreach (var size in new[] { "0", "1000", "1M", "1G", "100G", "3T" })
            foreach (var cluster in new[] { "512", "4k", "64k", "2M" })
                foreach (var opts in new[] { "", ",refcount_bits=1", ",refcount_bits=64", ",extended_l2=on", ",preallocation=full" })
                {
                    if (opts.Contains("extended") && cluster is "512" or "4k") continue;
                    string[] args = ["measure", "--output=json", "-O", "qcow2", "-o", "cluster_size=" + cluster + opts, "--size", size];
                    var q = Tools.Run("qemu-img", args);
                    var v = Tools.Vdisk(args);
                    if (q.ExitCode != v.ExitCode || q.StdOut != v.StdOut) failures.Add($"{string.Join(' ', args)}\nqemu: {q}\nvdisk: {v}");
                }
        Assert.True(failures.Count == 0, string.Join("\n\n", failures));
    }

    [Theory]
    [InlineData("-O", "qcow2")]
    [InlineData("-O", "qcow2", "-o", "cluster_size=4k")]
    [InlineData("-O", "qcow2", "-o", "cluster_size=2M")]
    [InlineData("-O", "qcow2", "-o", "compat=0.10")]
    [InlineData("--output=json", "-O", "qcow2", "-o", "cluster_size=16k,extended_l2=on")]
    [InlineData("-O", "raw")]
    [InlineData("--output=json")]
    public void FilledImagesAndChains(params string[] args)
    {
        using var dir = new TempDir();
        var chain = OpsImages.Chain(dir);
        var raw = OpsImages.Raw(dir);
        AssertSame([.. args, chain]);
        AssertSame([.. args, "-f", "raw", raw]);
    }

    [Fact]
    public void ErrorsAsQemuImg()
    {
        AssertSame("-O", "qcow2", "--size", "1G", "-o", "foo=1");
        AssertSame("-O", "qcow2", "-o", "refcount_bits=1,cluster_size=512", "--size", "7T");
        AssertSame("-O", "qcow2");
        AssertSame("-O", "qcow2", "-o", "cluster_size=4k,extended_l2=on", "--size", "1G");
    }
}
