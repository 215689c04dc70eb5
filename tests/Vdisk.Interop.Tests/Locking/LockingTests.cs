using Vdisk.Images;
using Xunit;

namespace Vdisk.Interop.Tests.Locking;

/// <summary>
/// Image locking as QEMU does it: the same lock bytes as qemu-io and qemu-nbd (read off /proc/locks), conflicts seen in
/// both directions with qemu-img's words and exit codes, -U where qemu-img takes it, and no self-destruction.
/// </summary>
public class LockingTests
{
    private static string Image(TempDir dir, string format, string name = "disk")
    {
        var path = dir.File($"{name}.{format}");
        Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", format, path, "1M").ExitCode);
        return path;
    }

    public static TheoryData<string, string> IoHolders() => new()
    {
        { "qcow2", "" }, { "qcow2", "-r" }, { "qcow2", "-r -U" }, { "raw", "-f raw" }, { "raw", "-f raw -r" }, { "raw", "-f raw -r -U" },
    };

    [Theory, MemberData(nameof(IoHolders))]
    public void VdiskIoHoldsTheLockBytesQemuIoHolds(string format, string options)
    {
        using var dir = new TempDir();
        var image = Image(dir, format);
        var args = options.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        SortedSet<long> qemu, vdisk;
        using (ImageHolder.Io(vdisk: false, image, args)) qemu = LockTable.BytesOf(image);
        using (ImageHolder.Io(vdisk: true, image, args)) vdisk = LockTable.BytesOf(image);
        Assert.NotEmpty(qemu);
        Assert.Equal(qemu, vdisk);
        Assert.Empty(LockTable.BytesOf(image)); // closing releases them
    }

    public static TheoryData<string, string> ServerHolders() => new()
    {
        { "qcow2", "-f qcow2" }, { "qcow2", "-f qcow2 -r" }, { "raw", "-f raw" }, { "raw", "-f raw -r" },
    };

    [Theory, MemberData(nameof(ServerHolders))]
    public void VdiskServeHoldsTheLockBytesQemuNbdHolds(string format, string options)
    {
        using var dir = new TempDir();
        var image = Image(dir, format);
        var args = options.Split(' ');
        SortedSet<long> qemu, vdisk;
        using (ImageHolder.Nbd(vdisk: false, dir, image, args)) qemu = LockTable.BytesOf(image);
        using (ImageHolder.Nbd(vdisk: true, dir, image, args)) vdisk = LockTable.BytesOf(image);
        Assert.NotEmpty(qemu);
        Assert.Equal(qemu, vdisk);
    }

    [Fact]
    public void ABackingFileIsLockedForSharedReadingAsQemuLocksIt()
    {
        using var dir = new TempDir();
        var baseImage = Image(dir, "qcow2", "base");
        var overlay = dir.File("top.qcow2");
        Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "qcow2", "-b", baseImage, "-F", "qcow2", overlay).ExitCode);
        SortedSet<long> qemu, vdisk;
        using (ImageHolder.Io(vdisk: false, overlay)) qemu = LockTable.BytesOf(baseImage);
        using (ImageHolder.Io(vdisk: true, overlay)) vdisk = LockTable.BytesOf(baseImage);
        Assert.Equal(qemu, vdisk);
        Assert.Equal(new SortedSet<long> { 100, 201, 203 }, vdisk); // reads it, lets nobody write or resize it
    }

    /// <summary>Commands run against an image a QEMU tool (or vdisk) holds for writing, with the answer qemu-img gives.</summary>
    public static TheoryData<string> HeldByWriter() => new() { "qemu-io", "vdisk io", "qemu-nbd", "vdisk serve" };

    [Theory, MemberData(nameof(HeldByWriter))]
    public void AnImageOpenForWritingElsewhereIsRefusedAsQemuRefusesIt(string holder)
    {
        using var dir = new TempDir();
        var image = Image(dir, "qcow2");
        using var held = HoldForWriting(holder, dir, image, "qcow2");

        // Each command through qemu's tool and vdisk: same exit status, same message (vdisk's prefix aside).
        string[][] refused =
        {
            ["img", "info", image], ["img", "check", image], ["img", "map", image], ["img", "snapshot", "-c", "s", image],
            ["img", "resize", image, "2M"], ["img", "convert", "-O", "raw", image, dir.File("out.raw")],
            ["io", "-c", "read 0 512", image], ["io", "-r", "-c", "read 0 512", image],
        };
        foreach (var command in refused)
        {
            var (qemu, vdisk) = Both(command);
            Assert.Equal(1, qemu.ExitCode);
            Assert.True(vdisk.ExitCode == 1, $"{string.Join(' ', command)}:\n{vdisk}");
            Assert.Contains("lock\nIs another process using the image [", qemu.StdErr);
            Assert.Equal(Unprefixed(qemu.StdErr), Unprefixed(vdisk.StdErr));
        }
        // -U reads it anyway.
        string[][] shared =
        {
            ["img", "info", "-U", image], ["img", "check", "-U", image], ["img", "map", "-U", image],
            ["img", "snapshot", "-U", "-l", image], ["img", "compare", "-U", image, image], ["img", "measure", "-U", "-O", "qcow2", image],
            ["io", "-r", "-U", "-c", "read 0 512", image],
        };
        foreach (var command in shared)
        {
            var (qemu, vdisk) = Both(command);
            Assert.True(qemu.ExitCode == 0, qemu.ToString());
            Assert.True(vdisk.ExitCode == 0, $"{string.Join(' ', command)}:\n{vdisk}");
        }
        Assert.False(File.Exists(dir.File("out.raw")));
    }

    /// <summary>
    /// A raw image shares what its user shares: next to a raw image held for writing, each command does what the
    /// same qemu-img/qemu-io command does (reads go on, convert's source and a resize against qemu-nbd are refused),
    /// with the same message. Outputs are compared whole, so no table of expectations can drift from QEMU.
    /// </summary>
    [Theory, MemberData(nameof(HeldByWriter))]
    public void NextToARawImageHeldForWritingEveryCommandDoesWhatQemusDoes(string holder)
    {
        using var dir = new TempDir();
        var image = Image(dir, "raw");
        using var held = HoldForWriting(holder, dir, image, "raw");
        string[][] commands =
        {
            ["img", "info", "-f", "raw", image], ["img", "map", "-f", "raw", image], ["img", "compare", "-f", "raw", "-F", "raw", image, image],
            ["img", "measure", "-f", "raw", "-O", "qcow2", image], ["img", "convert", "-f", "raw", "-O", "raw", image, dir.File("out.raw")],
            ["img", "resize", "-f", "raw", image, "2M"], ["io", "-f", "raw", "-c", "read 0 512", image], ["io", "-f", "raw", "-r", "-c", "read 0 512", image],
        };
        int refusals = 0;
        foreach (var command in commands)
        {
            var (qemu, vdisk) = Both(command);
            Assert.True(qemu.ExitCode == vdisk.ExitCode, $"{string.Join(' ', command)}:\nqemu: {qemu}\nvdisk: {vdisk}");
            Assert.Equal(Unprefixed(qemu.StdErr), Unprefixed(vdisk.StdErr));
            if (qemu.ExitCode != 0) refusals++;
            File.Delete(dir.File("out.raw"));
        }
        Assert.InRange(refusals, 1, commands.Length - 1); // some commands are refused, others share the image
    }

    [Theory]
    [InlineData("raw")]
    [InlineData("qcow2")]
    public void ABackingFileOfEitherFormatCarriesTheLocksQemuPutsOnIt(string format)
    {
        using var dir = new TempDir();
        var baseImage = Image(dir, format, "base");
        var overlay = dir.File("top.qcow2");
        Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "qcow2", "-b", baseImage, "-F", format, overlay).ExitCode);
        foreach (var options in new[] { new string[0], ["-r"] })
        {
            SortedSet<long> qemu, vdisk;
            using (ImageHolder.Io(vdisk: false, overlay, options)) qemu = LockTable.BytesOf(baseImage);
            using (ImageHolder.Io(vdisk: true, overlay, options)) vdisk = LockTable.BytesOf(baseImage);
            Assert.NotEmpty(qemu);
            Assert.Equal(qemu, vdisk);
        }
    }

    [Fact]
    public void ForceShareIsForReadOnlyOpensOnly()
    {
        using var dir = new TempDir();
        var image = Image(dir, "qcow2");
        string[][] commands =
        {
            ["img", "check", "-U", "-r", "all", image], ["img", "snapshot", "-U", "-c", "s", image], ["img", "bench", "-U", "-w", "-c", "1", image],
            ["io", "-U", "-c", "write 0 512", image],
        };
        foreach (var command in commands)
        {
            var (qemu, vdisk) = Both(command);
            Assert.Equal(1, qemu.ExitCode);
            Assert.Equal(qemu.ExitCode, vdisk.ExitCode);
            Assert.Contains("force-share=on can only be used with read-only images", qemu.StdErr);
            Assert.Equal(Unprefixed(qemu.StdErr), Unprefixed(vdisk.StdErr));
        }
    }

    public static TheoryData<string, string> SelfConverts() => new() { { "qcow2", "qcow2" }, { "qcow2", "raw" }, { "raw", "raw" } };

    [Theory, MemberData(nameof(SelfConverts))]
    public void ConvertOntoItsOwnSourceIsRefusedAndTheSourceKept(string format, string outFormat)
    {
        using var dir = new TempDir();
        var image = Image(dir, format);
        Assert.Equal(0, Tools.Run("qemu-io", "-f", format, "-c", "write -P 0x5a 0 64k", image).ExitCode);
        var before = File.ReadAllBytes(image);
        var (qemu, vdisk) = Both(["img", "convert", "-f", format, "-O", outFormat, image, image]);
        Assert.Equal(1, qemu.ExitCode);
        Assert.Equal(1, vdisk.ExitCode);
        Assert.Equal(Unprefixed(qemu.StdErr), Unprefixed(vdisk.StdErr));
        Assert.Equal(before, File.ReadAllBytes(image));
        // Sharing the source deliberately does not make it a target either.
        var forced = Tools.Vdisk("convert", "-U", "-f", format, "-O", outFormat, image, image);
        Assert.Equal(1, forced.ExitCode);
        Assert.Equal(before, File.ReadAllBytes(image));
    }

    [Fact]
    public void TwoLibraryHandlesCannotBothWrite()
    {
        using var dir = new TempDir();
        var image = Image(dir, "qcow2");
        using (var first = DiskImages.Open(image))
        {
            var e = Assert.Throws<DiskImageException>(() => DiskImages.Open(image));
            Assert.Equal(DiskImageErrorKind.Locked, e.Kind);
            Assert.Equal(image, e.FilePath);
            Assert.Equal("Failed to get \"write\" lock", e.Problem);
            var reader = Assert.Throws<DiskImageException>(() => DiskImages.Open(image, new ImageOpenOptions { ReadOnly = true }));
            Assert.Equal("Failed to get shared \"write\" lock", reader.Problem);
            using (var forced = DiskImages.Open(image, new ImageOpenOptions { ReadOnly = true, ForceShare = true }))
                Assert.Equal(first.Size, forced.Size);
            var bad = Assert.Throws<DiskImageException>(() => DiskImages.Open(image, new ImageOpenOptions { ForceShare = true }));
            Assert.Equal(DiskImageErrorKind.InvalidArgument, bad.Kind);
            first.Write(0, new byte[] { 1, 2, 3 }.AsSpan());
        }
        using var second = DiskImages.Open(image); // released on dispose
        var back = new byte[3];
        second.Read(0, back.AsSpan());
        Assert.Equal(new byte[] { 1, 2, 3 }, back);
    }

    [Fact]
    public void ABackingFileInUseCannotBeOpenedForWriting()
    {
        using var dir = new TempDir();
        var baseImage = Image(dir, "qcow2", "base");
        var overlay = dir.File("top.qcow2");
        Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "qcow2", "-b", baseImage, "-F", "qcow2", overlay).ExitCode);
        using var top = DiskImages.Open(overlay);
        Assert.Equal(DiskImageErrorKind.Locked, Assert.Throws<DiskImageException>(() => DiskImages.Open(baseImage)).Kind);
        using var reader = DiskImages.Open(baseImage, new ImageOpenOptions { ReadOnly = true });
        var qemu = Tools.Run("qemu-io", "-c", "write 0 512", baseImage);
        Assert.Contains("Failed to get \"write\" lock", qemu.StdErr);
    }

    /// <summary>"qemu-io", "vdisk io", "qemu-nbd" or "vdisk serve" with the image open for writing.</summary>
    private static ImageHolder HoldForWriting(string holder, TempDir dir, string image, string format)
    {
        bool vdisk = holder.StartsWith("vdisk", StringComparison.Ordinal);
        return holder.EndsWith("io", StringComparison.Ordinal)
            ? ImageHolder.Io(vdisk, image, "-f", format)
            : ImageHolder.Nbd(vdisk, dir, image, "-f", format);
    }

    /// <summary>Runs a command through qemu-img/qemu-io and through vdisk.</summary>
    private static (ToolResult Qemu, ToolResult Vdisk) Both(string[] command)
    {
        bool io = command[0] == "io";
        var rest = command[1..];
        var qemu = io ? Tools.Run("qemu-io", rest) : Tools.Run("qemu-img", rest);
        var vdisk = io ? Tools.Vdisk(["io", .. rest]) : Tools.Vdisk(rest);
        return (qemu, vdisk);
    }

    private static string Unprefixed(string stderr) => stderr.Replace("qemu-img: ", "").Replace("qemu-io: ", "").Replace("vdisk: ", "");
}
