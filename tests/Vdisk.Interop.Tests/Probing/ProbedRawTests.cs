using Xunit;

namespace Vdisk.Interop.Tests.Probing;

/// <summary>
/// A raw image opened without -f guards its first sector, as QEMU does: a write that would make it probe as another
/// format next time (here a qcow2 header, written byte by byte) fails with EPERM; with -f raw it goes through.
/// </summary>
public class ProbedRawTests
{
    // 'Q' 'F' 'I' 0xfb, then version 3 in the last byte of a big-endian u32: the qcow2 magic and a valid version.
    private static readonly string[] QcowHeaderByteByByte =
    {
        "write -P 0x51 0 1", "write -P 0x46 1 1", "write -P 0x49 2 1", "write -P 0xfb 3 1", "write -P 0x03 7 1",
    };

    private static string[] Commands(string image, params string[] leading) =>
        leading.Concat(QcowHeaderByteByByte.SelectMany(c => new[] { "-c", c })).Append(image).ToArray();

    [Fact]
    public void TheWriteThatCompletesAQcow2HeaderIsRefusedAsQemuIoRefusesIt()
    {
        using var dir = new TempDir();
        var qemuImage = dir.File("q.raw");
        var vdiskImage = dir.File("v.raw");
        foreach (var f in new[] { qemuImage, vdiskImage }) File.WriteAllBytes(f, new byte[1 << 20]);

        var qemu = Tools.Run("qemu-io", Commands(qemuImage));
        var vdisk = Tools.Vdisk(Commands(vdiskImage, "io"));
        Assert.EndsWith("write failed: Operation not permitted\n", qemu.StdOut);
        Assert.EndsWith("write failed: Operation not permitted\n", vdisk.StdOut);
        Assert.Equal(qemu.ExitCode, vdisk.ExitCode);
        // Both files still probe as raw, and hold the same bytes.
        Assert.Contains("file format: raw", Tools.Vdisk("info", vdiskImage).StdOut);
        Assert.Equal(File.ReadAllBytes(qemuImage), File.ReadAllBytes(vdiskImage));
    }

    [Fact]
    public void WithFormatRawGivenTheHeaderIsWritten()
    {
        using var dir = new TempDir();
        var image = dir.File("v.raw");
        File.WriteAllBytes(image, new byte[1 << 20]);
        var r = Tools.Vdisk(Commands(image, "io", "-f", "raw"));
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.DoesNotContain("failed", r.StdOut);
        var bytes = File.ReadAllBytes(image);
        Assert.Equal(new byte[] { 0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3 }, bytes[..8]);
    }
}
