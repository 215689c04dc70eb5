using Vdisk.Interop.Tests.Qcow2;
using Xunit;

namespace Vdisk.Interop.Tests.Cli;

/// <summary>Source images for the convert/compare/commit tests, written by QEMU's tools: data, zeros, holes, chains.</summary>
public static class OpsImages
{
    /// <summary>
    /// A qcow2 overlay on a qcow2 base: base data the overlay leaves visible, overlay data over base data, a zero
    /// cluster hiding base data, explicit zero-filled data, a data run with an embedded zero run, and holes.
    /// </summary>
    public static string Chain(TempDir dir, string name = "top.qcow2")
    {
        var baseImage = dir.File("base-" + name);
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", baseImage, "24M");
        Qemu.Io(baseImage, "qcow2", new[] { "write -P 0x11 0 3M", "write -P 0x12 8M 1M", "write -P 0x13 20M 512k" });
        var top = dir.File(name);
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", "-b", Path.GetFileName(baseImage), "-F", "qcow2", top);
        Qemu.Io(top, "qcow2", new[]
        {
            "write -P 0x21 1M 512k", "write -z 8M 256k", "write -P 0 12M 256k", "write -P 0x22 14M 100k",
            "write -P 0 14M 8k", "write -P 0x23 16M 4k", "write -P 0x24 23M 1M",
        });
        return top;
    }

    /// <summary>A raw image with data, explicit zeros and holes; the size is not a multiple of 64 KiB.</summary>
    public static string Raw(TempDir dir, string name = "src.raw")
    {
        var path = dir.File(name);
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "raw", path, (10L * 1024 * 1024 + 7 * 512).ToString());
        Qemu.Io(path, "raw", new[] { "write -P 0x31 0 1M", "write -P 0 2M 1M", "write -P 0x32 5M 3k", "write -P 0x33 9M 1k" });
        var noise = new byte[256 * 1024];
        new Random(3).NextBytes(noise);
        using (var f = new FileStream(path, FileMode.Open, FileAccess.Write)) { f.Position = 6L << 20; f.Write(noise); }
        return path;
    }

    public static void AssertIdentical(string a, string b)
    {
        var r = Tools.Run("qemu-img", "compare", a, b);
        Assert.True(r.ExitCode == 0, $"qemu-img compare {a} {b}\n{r}");
    }

    public static void AssertChecks(string path)
    {
        var r = Tools.Run("qemu-img", "check", path);
        Assert.True(r.ExitCode == 0, $"qemu-img check {path}\n{r}");
    }

    public static ToolResult MustVdisk(params string[] args)
    {
        var r = Tools.Vdisk(args);
        Assert.True(r.ExitCode == 0, $"vdisk {string.Join(' ', args)}\n{r}");
        return r;
    }
}
