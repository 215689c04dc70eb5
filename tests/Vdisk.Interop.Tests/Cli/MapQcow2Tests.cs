using Xunit;

namespace Vdisk.Interop.Tests.Cli;

/// <summary>`vdisk map` prints exactly what `qemu-img map` prints for qcow2 images made by QEMU.</summary>
public class MapQcow2Tests
{
    [Theory]
    [InlineData("cluster_size=65536", false, "json")]
    [InlineData("cluster_size=65536", false, "human")]
    [InlineData("cluster_size=4096", true, "json")]
    [InlineData("cluster_size=4096", true, "human")]
    [InlineData("extended_l2=on", true, "json")]
    [InlineData("compat=0.10", true, "json")]
    [InlineData("preallocation=metadata", false, "json")]
    public void SameOutputAsQemuImgMap(string options, bool withBacking, string output)
    {
        using var dir = new TempDir();
        var basePath = dir.File("base.qcow2");
        var path = dir.File("top.qcow2");
        var create = new List<string> { "create", "-q", "-f", "qcow2", "-o", options };
        if (withBacking)
        {
            Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "qcow2", basePath, "8M").ExitCode);
            Assert.Equal(0, Tools.Run("qemu-io", "-c", "write -P 1 0 1M", "-c", "write -z 2M 512k", "-c", "write -P 2 6M 100k", basePath).ExitCode);
            create.AddRange(["-b", "base.qcow2", "-F", "qcow2"]);
        }
        create.AddRange([path, "8M"]);
        Assert.Equal(0, Tools.Run("qemu-img", create.ToArray()).ExitCode);
        if (!options.StartsWith("preallocation", StringComparison.Ordinal))
            Assert.Equal(0, Tools.Run("qemu-io", "-c", "write -P 3 512k 1M", "-c", "write -z 3M 256k", "-c", "write -z -u 4M 64k",
                "-c", "discard 6M 64k", "-c", "write -P 4 7M 3k", path).ExitCode);
        var q = Tools.Run("qemu-img", "map", "--output=" + output, path);
        var v = Tools.Vdisk("map", "--output=" + output, path);
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(q.StdOut, v.StdOut);
    }
}
