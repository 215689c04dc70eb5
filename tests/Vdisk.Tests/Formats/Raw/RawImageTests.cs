using Vdisk.BlockIO;
using Vdisk.Formats.Raw;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Tests.Formats.Raw;

public class RawImageTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task WrittenDataReadsBackAndHolesReadAsZero(bool isAsync)
    {
        using var image = new RawImage(new MemoryBlockDevice(1 << 20), readOnly: false);
        var data = Enumerable.Range(0, 4096).Select(i => (byte)(i * 7)).ToArray();
        var back = new byte[8192];
        if (isAsync)
        {
            await image.WriteAsync(65536, data);
            await image.ReadAsync(65536 - 4096, back);
        }
        else
        {
            image.Write(65536, data.AsSpan());
            image.Read(65536 - 4096, back.AsSpan());
        }
        Assert.All(back[..4096], b => Assert.Equal(0, b));
        Assert.Equal(data, back[4096..]);
    }

    [Fact]
    public void RequestPastTheEndIsRejectedWithTheOffset()
    {
        using var image = new RawImage(new MemoryBlockDevice(4096), readOnly: false);
        var e = Assert.Throws<DiskImageException>(() => image.Read(4000, new byte[200].AsSpan()));
        Assert.Equal(DiskImageErrorKind.OutOfBounds, e.Kind);
        Assert.Equal(4000, e.Offset);
    }

    [Fact]
    public void WriteToReadOnlyImageIsRefused()
    {
        using var image = new RawImage(new MemoryBlockDevice(4096), readOnly: true);
        var e = Assert.Throws<DiskImageException>(() => image.Write(0, new byte[1].AsSpan()));
        Assert.Equal(DiskImageErrorKind.ReadOnly, e.Kind);
    }
}
