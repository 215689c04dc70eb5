using Vdisk.Interop.Tests.Qcow2;
using Xunit;

namespace Vdisk.Interop.Tests.Cli;

/// <summary>vdisk dd produces what qemu-img dd produces for the same operands.</summary>
public class DdOpsTests
{
    [Theory]
    [InlineData("raw", "bs=64k")]
    [InlineData("qcow2", "bs=1M count=5 skip=3")]
    [InlineData("qcow2", "skip=5000 count=2049")]
    [InlineData("raw", "bs=4k skip=100000")]
    public void MatchesQemuImgDd(string outFormat, string operands)
    {
        using var dir = new TempDir();
        var src = OpsImages.Chain(dir);
        var ours = dir.File("ours." + outFormat);
        var theirs = dir.File("theirs." + outFormat);
        var ops = operands.Split(' ');
        OpsImages.MustVdisk(["dd", "-O", outFormat, .. ops, "if=" + src, "of=" + ours]);
        Qemu.MustRun("qemu-img", ["dd", "-O", outFormat, .. ops, "if=" + src, "of=" + theirs]);
        Assert.Equal(Qemu.MustRun("qemu-img", "info", "--output=json", theirs).StdOut.Contains("\"virtual-size\": 0"),
            Qemu.MustRun("qemu-img", "info", "--output=json", ours).StdOut.Contains("\"virtual-size\": 0"));
        OpsImages.AssertIdentical(theirs, ours);
        Assert.Equal(new FileInfo(theirs).Length > 0, new FileInfo(ours).Length > 0);
        if (outFormat == "qcow2") OpsImages.AssertChecks(ours);
    }
}
