using Vdisk.Formats.Qcow2;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Tests.Formats.Qcow2;

/// <summary>Qcow2Measure against numbers qemu-img 7.2 measure printed for the same inputs.</summary>
public class Qcow2MeasureTests
{
    private static Qcow2CreateOptions Options(params (string Key, string Value)[] o) =>
        Qcow2CreateOptions.Parse(new ImageCreateOptions { Options = o.ToDictionary(x => x.Key, x => x.Value) }, "m.qcow2");

    [Theory]
    [InlineData(1L << 30, 0L, "65536", "16", 393216L, 1074135040L)]
    [InlineData(64L << 20, 38L, "65536", "16", 2818048L, 67436544L)]
    [InlineData(4L << 20, 1L, "65536", "16", 393216L, 4521984L)]
    [InlineData(1024L, 0L, "65536", "16", 327680L, 393216L)]
    [InlineData(100L << 30, 0L, "512", "16", 2138404352L, 109512586752L)]
    [InlineData(3L << 40, 0L, "2097152", "64", 33554432L, 3298568437760L)]
    public void MatchesQemuImgMeasure(long size, long dataClusters, string cluster, string refcountBits, long required, long fully)
    {
        var (r, f) = Qcow2Measure.Compute(Options(("cluster_size", cluster), ("refcount_bits", refcountBits)), size, dataClusters);
        Assert.Equal(required, r);
        Assert.Equal(fully, f);
    }

    [Fact]
    public void FullPreallocationRequiresEverythingAndTooLargeImagesAreRefused()
    {
        var (r, f) = Qcow2Measure.Compute(Options(("cluster_size", "2M"), ("preallocation", "full")), 1L << 20, 0);
        Assert.Equal(12582912L, f);
        Assert.Equal(f, r);
        var e = Assert.Throws<DiskImageException>(() => Qcow2Measure.Compute(Options(("cluster_size", "512"), ("refcount_bits", "1")), 7L << 40, 0));
        Assert.Contains("too large", e.Message);
    }
}
