using Vdisk.Images;
using Xunit;

namespace Vdisk.Interop.Tests.Qcow2;

/// <summary>Lazy refcounts: the dirty bit while refcounts lag, a clean close, and repair of a crashed image.</summary>
public class LazyRefcountsTests
{
    private static byte[] Pattern(int length, byte seed) => Enumerable.Range(0, length).Select(i => (byte)(i * 31 + seed)).ToArray();

    [Fact]
    public void CrashLeavesDirtyImageThatQemuFlagsAndVdiskRepairsOnOpen()
    {
        using var dir = new TempDir();
        var path = dir.File("lazy.qcow2");
        DiskImages.Create(path, "qcow2", new ImageCreateOptions { Size = 32 << 20, Options = new Dictionary<string, string> { ["lazy_refcounts"] = "on" } });
        var image = DiskImages.Open(path);
        var data = Pattern(3 << 20, 7);
        image.Write(1 << 20, data.AsSpan());
        image.Flush();
        Assert.True(image.IsDirty);
        image.Abandon(); // a crash: refcount blocks never written

        var info = Tools.Run("qemu-img", "info", "--output=json", path);
        Assert.Contains("\"dirty-flag\": true", info.StdOut);
        var check = Tools.Run("qemu-img", "check", path);
        Assert.Equal(2, check.ExitCode); // refcount=0 reference=1: QEMU needs a repair too

        var messages = new List<string>();
        using (var reopened = DiskImages.Open(path, new ImageOpenOptions { Messages = messages.Add }))
        {
            Assert.False(reopened.IsDirty);
            Assert.Contains(messages, m => m.StartsWith("Repairing cluster", StringComparison.Ordinal) || m.StartsWith("Rebuilding", StringComparison.Ordinal));
            var back = new byte[data.Length];
            reopened.Read(1 << 20, back.AsSpan());
            Assert.Equal(data, back);
        }
        var after = Tools.Run("qemu-img", "check", path);
        Assert.True(after.ExitCode == 0, after.ToString());
    }

    [Fact]
    public void CleanCloseClearsTheDirtyBitAndLeavesConsistentRefcounts()
    {
        using var dir = new TempDir();
        var path = dir.File("lazy.qcow2");
        DiskImages.Create(path, "qcow2", new ImageCreateOptions { Size = 32 << 20, Options = new Dictionary<string, string> { ["lazy_refcounts"] = "on" } });
        using (var image = DiskImages.Open(path))
        {
            image.Write(0, Pattern(1 << 20, 3).AsSpan());
            image.Discard(0, 256 << 10);
            image.Write(5 << 20, Pattern(70000, 9).AsSpan());
        }
        var info = Tools.Run("qemu-img", "info", "--output=json", path);
        Assert.Contains("\"dirty-flag\": false", info.StdOut);
        var check = Tools.Run("qemu-img", "check", path);
        Assert.True(check.ExitCode == 0, check.ToString());
    }

    [Fact]
    public void ReadOnlyOpenOfDirtyImageWritesNothing()
    {
        using var dir = new TempDir();
        var path = dir.File("lazy.qcow2");
        DiskImages.Create(path, "qcow2", new ImageCreateOptions { Size = 8 << 20, Options = new Dictionary<string, string> { ["lazy_refcounts"] = "on" } });
        var image = DiskImages.Open(path);
        image.Write(0, Pattern(65536, 1).AsSpan());
        image.Flush();
        image.Abandon();
        var before = File.ReadAllBytes(path);
        using (var ro = DiskImages.Open(path, new ImageOpenOptions { ReadOnly = true }))
        {
            Assert.True(ro.IsDirty);
            var back = new byte[65536];
            ro.Read(0, back.AsSpan());
            Assert.Equal(Pattern(65536, 1), back);
        }
        Assert.Equal(before, File.ReadAllBytes(path));
    }
}
