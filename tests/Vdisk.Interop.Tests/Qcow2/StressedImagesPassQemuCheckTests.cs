using Vdisk.Formats.Qcow2;
using Vdisk.Images;
using Vdisk.Tests.Formats.Qcow2;
using Xunit;

namespace Vdisk.Interop.Tests.Qcow2;

/// <summary>The unit tests' refcount-growth and concurrent-writer workloads, on files, judged by qemu-img check.</summary>
public class StressedImagesPassQemuCheckTests
{
    private static void AssertCleanAndSame(string path, byte[]? expected)
    {
        var check = Tools.Run("qemu-img", "check", path);
        Assert.True(check.ExitCode == 0 && check.StdOut.Contains("No errors were found"), check.ToString());
        if (expected is null) return;
        using var dir = new TempDir();
        var raw = Qemu.ConvertToRaw(path, dir.File("back.raw"));
        Assert.True(expected.AsSpan().SequenceEqual(raw), Qemu.FirstDifference(expected, raw));
    }

    [Fact]
    public void RefcountTableRelocationsLeaveACleanImage()
    {
        using var dir = new TempDir();
        var path = dir.File("grow.qcow2");
        DiskImages.Create(path, "qcow2", new ImageCreateOptions
        {
            Size = 8L << 20,
            Options = new Dictionary<string, string> { ["cluster_size"] = "512", ["refcount_bits"] = "64" },
        });
        byte[] shadow;
        using (var image = (Qcow2Image)DiskImages.Open(path))
        {
            List<long> tables;
            (shadow, tables) = Qcow2Scenarios.FillShuffled(image, () => image.Header.RefcountTableOffset, 7L << 20, seed: 512);
            Assert.True(tables.Count >= 3, $"expected several relocations, saw {tables.Count - 1}");
        }
        AssertCleanAndSame(path, shadow);
    }

    [Theory]
    [InlineData("65536")]
    [InlineData("4096")]
    [InlineData("16384,extended_l2=on")]
    public void ConcurrentWritersLeaveACleanImage(string clusterOptions)
    {
        using var dir = new TempDir();
        var path = dir.File("concurrent.qcow2");
        var parts = ("cluster_size=" + clusterOptions).Split(',').Select(p => p.Split('=')).ToDictionary(p => p[0], p => p[1]);
        DiskImages.Create(path, "qcow2", new ImageCreateOptions { Size = 4L << 20, Options = parts });
        const long region = 1L << 20;
        using (var image = DiskImages.Open(path))
        {
            var last = Qcow2Scenarios.ConcurrentWriters(image, region, 400, seed: clusterOptions.Length);
            Assert.Null(Qcow2Scenarios.VerifyConcurrentResult(image, region, last));
        }
        AssertCleanAndSame(path, null);
    }
}
