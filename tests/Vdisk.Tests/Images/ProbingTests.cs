using System.Buffers.Binary;
using System.Text;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Tests.Images;

/// <summary>Probing never takes another format for raw, and a probed raw image cannot be turned into another format.</summary>
public class ProbingTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vdisk-probe-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Write(string name, byte[] content)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, content);
        return path;
    }

    private static byte[] WithAscii(string text, int size = 4096, int at = 0)
    {
        var b = new byte[size];
        Encoding.ASCII.GetBytes(text).CopyTo(b, at);
        return b;
    }

    public static TheoryData<string, string> Headers() => new()
    {
        { "vmdk", "KDMV" }, { "vmdk", "COWD" }, { "vmdk", "# Disk DescriptorFile\nversion=1\nCID=fffffffe\n" }, { "vmdk", "#x\n   \nversion=2\r\nfoo" },
        { "vmdk", "  \r\nversion=3\r\n" }, { "vpc", "conectix" }, { "vhdx", "vhdxfile" },
    };

    [Theory, MemberData(nameof(Headers))]
    public void AForeignMagicIsRefusedByNameAndOpensOnlyAsExplicitRaw(string format, string magic)
    {
        var path = Write("image", WithAscii(magic));
        var e = Assert.Throws<DiskImageException>(() => DiskImages.Open(path));
        Assert.Equal(DiskImageErrorKind.UnsupportedFeature, e.Kind);
        Assert.Equal(path, e.FilePath);
        Assert.StartsWith($"Unknown file format '{format}' (", e.Problem);
        using var raw = DiskImages.Open(path, new ImageOpenOptions { Format = "raw", ReadOnly = true });
        Assert.Equal("raw", raw.FormatName);
    }

    [Fact]
    public void TextThatOnlyLooksLikeADescriptorIsRaw()
    {
        // Anything but comments and lines of blanks before "version=" makes it a plain file, as in QEMU 7.2 (which
        // takes even an empty line for text that is not a descriptor).
        foreach (var text in new[] { "hello\nversion=1\n", "# c\nversion=4\n", "version=1", "# Disk DescriptorFile\n\nversion=1\n" })
        {
            using var image = DiskImages.Open(Write("text", WithAscii(text)), new ImageOpenOptions { ReadOnly = true });
            Assert.Equal("raw", image.FormatName);
        }
    }

    [Fact]
    public void QcowVersionOneIsNotQcow2()
    {
        var header = new byte[4096];
        BinaryPrimitives.WriteUInt32BigEndian(header, 0x514649fb);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(4), 1);
        var e = Assert.Throws<DiskImageException>(() => DiskImages.Open(Write("v1", header)));
        Assert.StartsWith("Unknown file format 'qcow' (", e.Problem);
    }

    [Fact]
    public void AnEmptyFileIsRaw()
    {
        using var image = DiskImages.Open(Write("empty", []), new ImageOpenOptions { ReadOnly = true });
        Assert.Equal("raw", image.FormatName);
    }

    [Fact]
    public void AProbedRawImageRefusesAWriteThatMakesSectorZeroAnotherFormat()
    {
        var path = Write("disk.raw", new byte[1 << 20]);
        using var image = DiskImages.Open(path);
        Assert.Equal("raw", image.FormatName);
        var e = Assert.Throws<DiskImageException>(() => image.Write(0, WithAscii("vhdxfile", 512).AsSpan()));
        Assert.Equal(1, e.Errno); // EPERM, what qemu-io reports as "Operation not permitted"
        Assert.Contains("vhdx", e.Problem);
        // A write that finishes a header across two requests is caught by the second.
        image.Write(0, "KD"u8);
        Assert.Throws<DiskImageException>(() => image.Write(2, "MV"u8));
        // Ordinary data, zeroes and writes past the first sector go through.
        image.Write(0, WithAscii("just data", 512).AsSpan());
        image.WriteZeroes(0, 4096);
        image.Write(512, WithAscii("KDMV", 512).AsSpan());
        var sector = new byte[4];
        image.Read(0, sector.AsSpan());
        Assert.Equal(new byte[4], sector);
    }

    [Fact]
    public void AnExplicitlyRawImageTakesAnyFirstSector()
    {
        var path = Write("disk.raw", new byte[1 << 20]);
        using (var image = DiskImages.Open(path, new ImageOpenOptions { Format = "raw" }))
            image.Write(0, WithAscii("vhdxfile", 512).AsSpan());
        Assert.StartsWith("Unknown file format 'vhdx'", Assert.Throws<DiskImageException>(() => DiskImages.Open(path)).Problem);
    }
}
