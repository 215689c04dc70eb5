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
}
