using Vdisk.Images;
using Xunit;

namespace Vdisk.Interop.Tests.HostErrors;

/// <summary>
/// A full file system, for real: the error is ENOSPC with qemu's words on every front end, nothing flushed is lost,
/// the image checks clean or leaking only, a failed create or convert leaves no file behind, and preallocated space
/// really is reserved.
/// </summary>
public class DiskFullTests
{
    private const int MiB = 1 << 20;

    public static TheoryData<string, string> Layouts() => new()
    {
        { "qcow2", "off" }, { "qcow2", "metadata" }, { "qcow2", "falloc" }, { "qcow2", "full" },
        { "raw", "off" }, { "raw", "falloc" }, { "raw", "full" },
    };

    [Theory, MemberData(nameof(Layouts))]
    public void WritesOnAFullFileSystemFailWithEnospcOrFitInPreallocatedSpace(string format, string preallocation)
    {
        using var fs = new SmallFileSystem(32L * MiB);
        var image = fs.File("disk." + format);
        Assert.Equal(0, Tools.Vdisk("create", "-q", "-f", format, "-o", "preallocation=" + preallocation, image, "16M").ExitCode);
        // Durable before the disk fills up: must read back whatever happens next.
        var first = Tools.Vdisk("io", "-f", format, "-c", "write -P 0x11 8M 1M", "-c", "flush", image);
        Assert.True(first.ExitCode == 0, first.ToString());
        fs.FillUp();

        var write = Tools.Vdisk("io", "-f", format, "-c", "write -P 0x22 0 8M", image);
        bool reserved = preallocation is "falloc" or "full";
        if (reserved)
        {
            // Space the image reserved at creation is its own: a full file system does not take it away.
            Assert.True(write.ExitCode == 0, write.ToString());
        }
        else
        {
            Assert.Equal(1, write.ExitCode);
            Assert.Contains("write failed: No space left on device", write.StdOut);
            Assert.DoesNotContain("Input/output error", write.StdOut + write.StdErr);
        }

        File.Delete(fs.File("filler"));
        if (format == "qcow2")
        {
            var check = Tools.Run("qemu-img", "check", image);
            Assert.True(check.ExitCode is 0 or 3, "clean or leaking only:\n" + check); // 3: leaks, no corruption
        }
        var read = Tools.Run("qemu-io", "-f", format, "-c", "read -P 0x11 8M 1M", image);
        Assert.True(read.ExitCode == 0 && !read.StdOut.Contains("failed"), read.ToString());
        if (reserved)
        {
            var written = Tools.Run("qemu-io", "-f", format, "-c", "read -P 0x22 0 8M", image);
            Assert.True(written.ExitCode == 0 && !written.StdOut.Contains("failed"), written.ToString());
        }
    }

    [Fact]
    public void TheLibraryThrowsADiskImageExceptionCarryingEnospc()
    {
        using var fs = new SmallFileSystem(8L * MiB);
        var path = fs.File("lib.qcow2");
        DiskImages.Create(path, "qcow2", new ImageCreateOptions { Size = 64L * MiB });
        fs.FillUp();
        using var image = DiskImages.Open(path);
        var e = Assert.Throws<DiskImageException>(() => image.Write(0, new byte[4 * MiB].AsSpan()));
        Assert.Equal(DiskImageErrorKind.NoSpace, e.Kind);
        Assert.Equal(28, e.Errno);
        Assert.Equal(path, e.FilePath);
        Assert.NotNull(e.Offset);
        Assert.Contains("No space left on device", e.Message);
        File.Delete(fs.File("filler"));
    }

    public static TheoryData<string, string> Creations() => new()
    {
        { "qcow2", "full" }, { "qcow2", "falloc" }, { "raw", "full" }, { "raw", "falloc" },
    };

    [Theory, MemberData(nameof(Creations))]
    public void ACreateThatRunsOutOfSpaceRemovesItsFile(string format, string preallocation)
    {
        using var fs = new SmallFileSystem(8L * MiB);
        var image = fs.File("big." + format);
        var r = Tools.Vdisk("create", "-q", "-f", format, "-o", "preallocation=" + preallocation, image, "64M");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("No space left on device", r.StdErr);
        Assert.False(File.Exists(image), "a failed create must not leave a partial image");
    }

    [Theory]
    [InlineData("off")]
    [InlineData("full")] // the target runs out of space while it is created, before the copy starts
    public void AConvertThatRunsOutOfSpaceRemovesItsTarget(string preallocation)
    {
        using var dir = new TempDir();
        var source = dir.File("random.raw");
        var data = new byte[24 * MiB];
        new Random(5).NextBytes(data);
        File.WriteAllBytes(source, data);
        using var fs = new SmallFileSystem(8L * MiB);
        var target = fs.File("out.qcow2");
        var r = Tools.Vdisk("convert", "-f", "raw", "-O", "qcow2", "-o", "preallocation=" + preallocation, source, target);
        Assert.Equal(1, r.ExitCode);
        // qemu-img's words: the copy names the guest byte it could not write; a create that fails names the target.
        Assert.Contains(preallocation == "off" ? "vdisk: error while writing at byte " : $"vdisk: {target}: error while converting qcow2: ", r.StdErr);
        Assert.Contains("No space left on device", r.StdErr);
        Assert.False(File.Exists(target), "a failed convert must remove the image it created");
    }

    [Fact]
    public void AFailedConvertOverAnExistingFileOrThroughALinkKeepsWhatItDidNotMake()
    {
        using var dir = new TempDir();
        var source = dir.File("random.raw");
        var data = new byte[24 * MiB];
        new Random(6).NextBytes(data);
        File.WriteAllBytes(source, data);
        using var fs = new SmallFileSystem(8L * MiB);

        // An existing file it wrote over is left empty, not deleted: the file was the user's.
        var existing = fs.File("existing.qcow2");
        File.WriteAllBytes(existing, new byte[4096]);
        Assert.Equal(1, Tools.Vdisk("convert", "-f", "raw", "-O", "qcow2", source, existing).ExitCode);
        Assert.True(File.Exists(existing));
        Assert.Equal(0, new FileInfo(existing).Length);

        // Through a link to a new file: the file it made is removed, the link (not its to remove) stays.
        var link = dir.File("link.qcow2");
        var real = fs.File("real.qcow2");
        File.CreateSymbolicLink(link, real);
        Assert.Equal(1, Tools.Vdisk("convert", "-f", "raw", "-O", "qcow2", source, link).ExitCode);
        Assert.False(File.Exists(real), "the half-written image behind the link must go");
        Assert.NotNull(new FileInfo(link).LinkTarget);
    }

    [Fact]
    public void ACreateOverAnExistingFileThatRunsOutOfSpaceLeavesItEmpty()
    {
        using var fs = new SmallFileSystem(8L * MiB);
        var image = fs.File("old.qcow2");
        File.WriteAllBytes(image, new byte[64 << 10]);
        var r = Tools.Vdisk("create", "-q", "-f", "qcow2", "-o", "preallocation=full", image, "64M");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("No space left on device", r.StdErr);
        Assert.Equal(0, new FileInfo(image).Length); // no half-made image, and the space is free again
    }

    [Fact]
    public void AFileSizeLimitIsFileTooLargeAsQemuIoSaysIt()
    {
        // RLIMIT_FSIZE (ulimit -f, in KiB) makes writes past 2 MiB fail with EFBIG; SIGXFSZ ignored, as a shell can.
        using var dir = new TempDir();
        var results = new List<ToolResult>();
        foreach (var tool in new[] { "qemu-io", "vdisk" })
        {
            var image = dir.File(tool + ".qcow2");
            Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "qcow2", image, "16M").ExitCode);
            string program = tool == "vdisk"
                ? Environment.GetEnvironmentVariable("VDISK_CLI") is { Length: > 0 } cli ? $"'{cli}' io"
                    // The JIT runtime maps its code through a memfd it sizes with ftruncate, which the limit would
                    // refuse at start-up; the native build (./vdisk) has no such file.
                    : $"env DOTNET_EnableWriteXorExecute=0 dotnet '{Path.Combine(AppContext.BaseDirectory, "Vdisk.Cli.dll")}' io"
                : "qemu-io";
            results.Add(Tools.Run("bash", "-c", $"trap '' XFSZ; ulimit -f 2048; exec {program} -c 'write -P 7 0 3M' -c 'read -P 0 8M 512' '{image}'"));
        }
        Assert.StartsWith("write failed: File too large\nread 512/512 bytes", results[0].StdOut);
        Assert.Equal(results[0].ExitCode, results[1].ExitCode);
        Assert.StartsWith("write failed: File too large\nread 512/512 bytes", results[1].StdOut);
        Assert.DoesNotContain("internal error", results[1].StdErr);
    }

    [Fact]
    public void TheNbdServerAnswersEnospc()
    {
        using var fs = new SmallFileSystem(8L * MiB);
        using var dir = new TempDir();
        var image = fs.File("served.qcow2");
        Assert.Equal(0, Tools.Vdisk("create", "-q", "-f", "qcow2", image, "64M").ExitCode);
        fs.FillUp();
        var socket = dir.File("nbd.sock");
        using (var server = Nbd.NbdServerProcess.Vdisk(dir, "-f", "qcow2", "-k", socket, image))
        {
            var r = Tools.Run("qemu-io", "-f", "raw", "-c", "write -P 0x33 0 4M", $"nbd+unix:///?socket={socket}");
            Assert.Contains("write failed: No space left on device", r.StdOut);
        }
        File.Delete(fs.File("filler"));
    }
}
