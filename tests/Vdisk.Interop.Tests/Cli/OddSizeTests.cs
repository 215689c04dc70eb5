using System.Text.Json;
using Vdisk.Interop.Tests.Qcow2;
using Xunit;

namespace Vdisk.Interop.Tests.Cli;

/// <summary>
/// qemu-iotests 104: sizes that are not a multiple of 512 are rounded up to whole sectors, as qemu-img does, for
/// qcow2 and raw images created with such a size and for raw files of such a length.
/// </summary>
public class OddSizeTests
{
    private static long VirtualSize(string path, string format) =>
        JsonDocument.Parse(Qemu.MustRun("qemu-img", "info", "-f", format, "--output=json", path).StdOut).RootElement.GetProperty("virtual-size").GetInt64();

    [Theory]
    [InlineData("qcow2")]
    [InlineData("raw")]
    public void CreateRoundsTheSizeUpToWholeSectorsAsIotest104(string format)
    {
        using var dir = new TempDir();
        string q = dir.File("q." + format), v = dir.File("v." + format);
        var theirs = Tools.Run("qemu-img", "create", "-f", format, q, "1234");
        var ours = Tools.Vdisk("create", "-f", format, v, "1234");
        Assert.Equal(theirs.StdOut.Replace(q, v), ours.StdOut);
        Assert.Equal(1536, VirtualSize(v, format));
        Assert.Equal(new FileInfo(q).Length, new FileInfo(v).Length);
        Assert.Contains("virtual size: 1.5 KiB (1536 bytes)", Tools.Vdisk("info", "-f", format, v).StdOut);
        // Data written past the size asked for, inside the last sector, reads back through QEMU.
        Assert.Equal(0, Tools.Vdisk("io", "-f", format, "-c", "write -q -P 7 1024 512", v).ExitCode);
        Qemu.Io(v, format, new[] { "read -q -P 7 1024 512" });
    }

    [Fact]
    public void RawFileOfAnOddLengthReadsAsQemuShowsIt()
    {
        using var dir = new TempDir();
        var data = Enumerable.Range(0, 1000).Select(i => (byte)(i % 251 + 1)).ToArray();
        string q = dir.File("q.raw"), v = dir.File("v.raw");
        File.WriteAllBytes(q, data);
        File.WriteAllBytes(v, data);
        Assert.Equal(1024, VirtualSize(v, "raw"));
        Assert.Contains("virtual size: 1 KiB (1024 bytes)", Tools.Vdisk("info", "-f", "raw", v).StdOut);
        var map = Tools.Vdisk("map", "-f", "raw", "--output=json", v);
        Assert.Equal(Qemu.MustRun("qemu-img", "map", "-f", "raw", "--output=json", q).StdOut, map.StdOut);
        var read = Tools.Vdisk("io", "-f", "raw", "-c", "read -q -P 0 1000 24", "-c", "read -q -v 992 8", v);
        Assert.True(read.ExitCode == 0 && !read.StdOut.Contains("verification failed"), read.ToString());

        Qemu.MustRun("qemu-io", "-f", "raw", "-c", "write -q -P 5 1000 24", q);
        Assert.Equal(0, Tools.Vdisk("io", "-f", "raw", "-c", "write -q -P 5 1000 24", v).ExitCode);
        Assert.Equal(File.ReadAllBytes(q), File.ReadAllBytes(v));
    }
}
