using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Tests.Images;

/// <summary><see cref="ImageOpenOptions.BackingOpener"/>: a chain whose files are not in the file system.</summary>
public class BackingOpenerTests
{
    [Fact]
    public void TheOpenerGetsTheResolvedNameAndReadOnlyOptionsAndTheChainReadsThrough()
    {
        var baseFile = new MemoryBlockDevice(0, "base.qcow2");
        new Qcow2Format().Create(baseFile, new ImageCreateOptions { Size = 1 << 20 });
        using (var b = Qcow2Image.Open(new BorrowedBlockDevice(baseFile), new ImageOpenOptions()))
            b.Write(4096, Enumerable.Repeat((byte)0x5A, 512).ToArray().AsSpan());
        var topFile = new MemoryBlockDevice(0, "/images/top.qcow2");
        new Qcow2Format().Create(topFile, new ImageCreateOptions
        {
            Size = 1 << 20,
            Options = new Dictionary<string, string> { ["backing_file"] = "base.qcow2", ["backing_fmt"] = "qcow2" },
        });

        var asked = new List<(string Name, bool ReadOnly, string? Format)>();
        using var top = Qcow2Image.Open(new BorrowedBlockDevice(topFile), new ImageOpenOptions
        {
            BackingOpener = (name, options) =>
            {
                asked.Add((name, options.ReadOnly, options.Format));
                return Qcow2Image.Open(new BorrowedBlockDevice(baseFile), options);
            },
        });

        Assert.Equal([("/images/base.qcow2", true, "qcow2")], asked);
        var back = new byte[512];
        top.Read(4096, back.AsMemory());
        Assert.All(back, b => Assert.Equal(0x5A, b));
    }
}
