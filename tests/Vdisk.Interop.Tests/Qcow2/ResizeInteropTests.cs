using System.Text.Json;
using Xunit;

namespace Vdisk.Interop.Tests.Qcow2;

/// <summary>vdisk resize against qemu-img info, qemu-io and qemu-img check.</summary>
public class ResizeInteropTests
{
    private static long VirtualSize(string path) =>
        JsonDocument.Parse(Qemu.MustRun("qemu-img", "info", "--output=json", path).StdOut).RootElement.GetProperty("virtual-size").GetInt64();

    [Theory]
    [InlineData("cluster_size=65536")]
    [InlineData("cluster_size=4096")]
    [InlineData("compat=0.10")]
    public void GrowAndShrinkKeepDataAndPassCheck(string options)
    {
        using var dir = new TempDir();
        var path = dir.File("r.qcow2");
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", "-o", options, path, "1G");
        Qemu.Io(path, "qcow2", new[] { "write -q -P 0x61 0 1M", "write -q -P 0x62 1023M 1M" });
        var grow = Tools.Vdisk("resize", path, "2T");
        Assert.True(grow.ExitCode == 0 && grow.StdOut == "Image resized.\n", grow.ToString());
        Assert.Equal(2L << 40, VirtualSize(path));
        Assert.Equal(0, Tools.Run("qemu-img", "check", path).ExitCode);
        Qemu.Io(path, "qcow2", new[] { "read -q -P 0x61 0 1M", "read -q -P 0x62 1023M 1M", "read -q -P 0 1024M 1M", "read -q -P 0 2047G 1M" });

        var refused = Tools.Vdisk("resize", path, "-1T");
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("Use the --shrink option", refused.StdErr);
        var shrink = Tools.Vdisk("resize", "--shrink", path, "1023M");
        Assert.True(shrink.ExitCode == 0, shrink.ToString());
        Assert.Equal(1023L << 20, VirtualSize(path));
        Assert.Equal(0, Tools.Run("qemu-img", "check", path).ExitCode);
        Assert.Equal(0, Tools.Vdisk("resize", path, "+1M").ExitCode);
        Qemu.Io(path, "qcow2", new[] { "read -q -P 0x61 0 1M", "read -q -P 0 1023M 1M" });
        Assert.Equal(0, Tools.Run("qemu-img", "check", path).ExitCode);
    }

    [Fact]
    public void RawAndPreallocatedResizeMatchQemu()
    {
        using var dir = new TempDir();
        var raw = dir.File("r.raw");
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "raw", raw, "1M");
        Assert.Equal(0, Tools.Vdisk("resize", "-f", "raw", raw, "+3M").ExitCode);
        Assert.Equal(4L << 20, new FileInfo(raw).Length);
        var q = dir.File("p.qcow2");
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", q, "1M");
        Assert.Equal(0, Tools.Vdisk("resize", "--preallocation=falloc", q, "64M").ExitCode);
        Assert.Equal(0, Tools.Run("qemu-img", "check", q).ExitCode);
        var map = Qemu.MustRun("qemu-img", "map", "--output=json", q).StdOut;
        Assert.Contains("\"data\": true", map);
        Qemu.Io(q, "qcow2", new[] { "read -q -P 0 0 64M" });
    }

    [Fact]
    public void ResizeWithSnapshotsKeepsThemApplicable()
    {
        using var dir = new TempDir();
        var path = dir.File("s.qcow2");
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", path, "32M");
        Qemu.Io(path, "qcow2", new[] { "write -q -P 0x71 0 32M" });
        Assert.Equal(0, Tools.Vdisk("snapshot", "-c", "s", path).ExitCode);
        Assert.Equal(0, Tools.Vdisk("resize", path, "8G").ExitCode);
        Assert.Equal(0, Tools.Vdisk("resize", "--shrink", path, "16M").ExitCode);
        Assert.Equal(0, Tools.Run("qemu-img", "check", path).ExitCode);
        Qemu.MustRun("qemu-img", "snapshot", "-a", "s", path);
        Assert.Equal(32L << 20, VirtualSize(path));
        Qemu.Io(path, "qcow2", new[] { "read -q -P 0x71 0 32M" });
        Assert.Equal(0, Tools.Run("qemu-img", "check", path).ExitCode);
    }

    /// <summary>v.qcow2 (vdisk's result) reads as given, passes qemu-img check and holds what q.qcow2 (QEMU's) holds.</summary>
    private static void ReadsAndMatchesQemu(TempDir dir, params string[] reads)
    {
        Qemu.Io(dir.File("v.qcow2"), "qcow2", reads);
        Assert.Equal(0, Tools.Run("qemu-img", "check", dir.File("v.qcow2")).ExitCode);
        Assert.Equal(0, Tools.Run("qemu-img", "compare", dir.File("q.qcow2"), dir.File("v.qcow2")).ExitCode);
    }

    /// <summary>qemu-iotests 292: a shrink into a cluster and a grow inside it must not bring the old data back.</summary>
    [Fact]
    public void GrowAfterShrinkOverALongerBackingFileReadsZerosAsIotest292()
    {
        using var dir = new TempDir();
        foreach (var name in new[] { "q", "v" })
        {
            Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", dir.File(name + ".base"), "1M");
            Qemu.MustRun("qemu-io", "-c", "write -q -P 0x11 0 1M", dir.File(name + ".base"));
            Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", name + ".base", dir.File(name + ".qcow2"));
            Qemu.MustRun("qemu-io", "-c", "write -q -P 0x22 0 1M", dir.File(name + ".qcow2"));
        }
        Qemu.MustRun("qemu-img", "resize", "-q", "--shrink", dir.File("q.qcow2"), "520k");
        Qemu.MustRun("qemu-img", "resize", "-q", dir.File("q.qcow2"), "567k");
        Assert.Equal(0, Tools.Vdisk("resize", "-q", "--shrink", dir.File("v.qcow2"), "520k").ExitCode);
        var grow = Tools.Vdisk("resize", dir.File("v.qcow2"), "567k");
        Assert.True(grow.ExitCode == 0 && grow.StdOut == "Image resized.\n", grow.ToString());

        ReadsAndMatchesQemu(dir, "read -q -P 0x22 0 520k", "read -q -P 0 520k 47k");
        // The tail is data written as zeros, not a zero cluster: one data run from 0 to the end, as qemu-img map shows.
        Assert.Equal(Qemu.Map(dir.File("q.qcow2")), Qemu.Map(dir.File("v.qcow2")));
    }

    [Fact]
    public void GrowingPastTheOldEndOfALongerBackingFileReadsZeros()
    {
        using var dir = new TempDir();
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "raw", dir.File("base.raw"), "4M");
        Qemu.MustRun("qemu-io", "-f", "raw", "-c", "write -q -P 0x44 0 4M", dir.File("base.raw"));
        foreach (var name in new[] { "q", "v" })
            Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", "base.raw", dir.File(name + ".qcow2"), "1000k");
        Qemu.MustRun("qemu-img", "resize", "-q", dir.File("q.qcow2"), "3M");
        Assert.Equal(0, Tools.Vdisk("resize", "-q", dir.File("v.qcow2"), "3M").ExitCode);

        ReadsAndMatchesQemu(dir, "read -q -P 0x44 0 1000k", "read -q -P 0 1000k 2072k");
        Assert.Equal(L2Dump.Entries(dir.File("q.qcow2")), L2Dump.Entries(dir.File("v.qcow2")));
    }

    /// <summary>v2 has no zero clusters to hide the backing file with: qemu-img refuses such a grow and keeps the size.</summary>
    [Fact]
    public void GrowingAV2OverlayOverALongerBackingFileIsRefusedAsQemu()
    {
        using var dir = new TempDir();
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", dir.File("base.qcow2"), "4M");
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", "-F", "qcow2", "-b", "base.qcow2", dir.File("top.qcow2"), "1M");
        var q = Tools.Run("qemu-img", "resize", dir.File("top.qcow2"), "2M");
        var v = Tools.Vdisk("resize", dir.File("top.qcow2"), "2M");
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(q.StdErr.Replace("qemu-img:", "vdisk:"), v.StdErr);
        Assert.Equal(1L << 20, VirtualSize(dir.File("top.qcow2")));
    }
}
