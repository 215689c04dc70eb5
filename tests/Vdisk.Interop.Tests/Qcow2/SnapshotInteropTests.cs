using System.Text.Json;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Interop.Tests.Qcow2;

/// <summary>Snapshots made by Vdisk, read by qemu-img, and the other way round; qemu-img check after every step.</summary>
public class SnapshotInteropTests
{
    private static void CheckClean(string path)
    {
        var r = Tools.Run("qemu-img", "check", path);
        Assert.True(r.ExitCode == 0, r.ToString());
    }

    private static List<(string Id, string Tag, string VmSize)> QemuList(string path)
    {
        var lines = Qemu.MustRun("qemu-img", "snapshot", "-l", path).StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        return lines.Skip(2).Select(l => (l[..10].Trim(), l[10..27].Trim(), l[27..35].Trim())).ToList();
    }

    [Fact]
    public void VdiskSnapshotsAreListedAndAppliedByQemu()
    {
        using var dir = new TempDir();
        var path = dir.File("v.qcow2");
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", path, "64M");
        var vm = new byte[200_000];
        new Random(1).NextBytes(vm);
        using (var image = (Qcow2Image)DiskImages.Open(path))
        {
            image.Write(0, Enumerable.Repeat((byte)0x11, 2 << 20).ToArray().AsSpan());
            image.CreateSnapshot("first");
            image.Write(1 << 20, Enumerable.Repeat((byte)0x22, 2 << 20).ToArray().AsSpan());
            image.CreateSnapshot("second", new MemoryStream(vm));
            image.Write(0, Enumerable.Repeat((byte)0x33, 4 << 20).ToArray().AsSpan());
        }
        CheckClean(path);
        Assert.Equal(new[] { ("1", "first", "0 B"), ("2", "second", "195 KiB") }, QemuList(path));
        Assert.Equal(Qemu.MustRun("qemu-img", "snapshot", "-l", path).StdOut, Tools.Vdisk("snapshot", "-l", path).StdOut);
        Assert.Equal(Qemu.MustRun("qemu-img", "info", path).StdOut, Tools.Vdisk("info", path).StdOut);
        Assert.Equal(Qemu.MustRun("qemu-img", "info", "--output=json", path).StdOut, Tools.Vdisk("info", "--output=json", path).StdOut);

        Qemu.MustRun("qemu-img", "snapshot", "-a", "second", path);
        CheckClean(path);
        Qemu.Io(path, "qcow2", new[] { "read -q -P 0x11 0 1M", "read -q -P 0x22 1M 2M", "read -q -P 0 3M 1M" });
        Qemu.MustRun("qemu-img", "snapshot", "-a", "first", path);
        CheckClean(path);
        Qemu.Io(path, "qcow2", new[] { "read -q -P 0x11 0 2M", "read -q -P 0 2M 2M" });
        using (var image = (Qcow2Image)DiskImages.Open(path, new ImageOpenOptions { ReadOnly = true }))
        using (var view = image.OpenSnapshot("second"))
        {
            var back = new MemoryStream();
            view.LoadVmState(back);
            Assert.Equal(vm, back.ToArray());
        }
        Qemu.MustRun("qemu-img", "snapshot", "-d", "first", path);
        CheckClean(path);
    }

    [Fact]
    public void QemuSnapshotsAreListedAppliedAndDeletedByVdisk()
    {
        using var dir = new TempDir();
        var path = dir.File("q.qcow2");
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", path, "16M");
        Qemu.Io(path, "qcow2", new[] { "write -q -P 0x41 0 1M" });
        Qemu.MustRun("qemu-img", "snapshot", "-c", "qa", path);
        Qemu.Io(path, "qcow2", new[] { "write -q -P 0x42 512k 1M" });
        Qemu.MustRun("qemu-img", "snapshot", "-c", "qb", path);
        Qemu.Io(path, "qcow2", new[] { "write -q -P 0x43 0 64k" });

        var vdiskList = Tools.Vdisk("snapshot", "-l", path);
        Assert.Equal(Qemu.MustRun("qemu-img", "snapshot", "-l", path).StdOut, vdiskList.StdOut);
        Assert.Equal(0, Tools.Vdisk("io", "-l", "qa", "-c", "read -P 0x41 0 1M", "-c", "read -P 0 1M 1M", path).ExitCode);
        var apply = Tools.Vdisk("snapshot", "-a", "qa", path);
        Assert.True(apply.ExitCode == 0, apply.ToString());
        CheckClean(path);
        Qemu.Io(path, "qcow2", new[] { "read -q -P 0x41 0 1M", "read -q -P 0 1M 1M" });
        Qemu.Io(path, "qcow2", new[] { "write -q -P 0x44 0 8k" });
        CheckClean(path);
        Assert.Equal(0, Tools.Vdisk("snapshot", "-d", "qa", path).ExitCode);
        CheckClean(path);
        Assert.Equal(0, Tools.Vdisk("snapshot", "-a", "1", path).ExitCode is 0 ? 1 : 0); // ID 1 is gone
        Assert.Equal(0, Tools.Vdisk("snapshot", "-a", "qb", path).ExitCode);
        CheckClean(path);
        Qemu.Io(path, "qcow2", new[] { "read -q -P 0x41 0 512k", "read -q -P 0x42 512k 1M" });
        Assert.Equal(0, Tools.Vdisk("snapshot", "-d", "qb", path).ExitCode);
        CheckClean(path);
        Assert.Equal("", Qemu.MustRun("qemu-img", "snapshot", "-l", path).StdOut);
    }

    [Fact]
    public void QemuTableAtTheEndOfTheFileWithoutPaddingIsRead()
    {
        using var dir = new TempDir();
        var path = dir.File("end.qcow2");
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", path, "1M");
        Qemu.MustRun("qemu-img", "snapshot", "-c", "last", path);
        Assert.NotEqual(0, new FileInfo(path).Length % 8); // qemu leaves the entry's padding unwritten
        Assert.Equal(Qemu.MustRun("qemu-img", "snapshot", "-l", path).StdOut, Tools.Vdisk("snapshot", "-l", path).StdOut);
        Assert.Equal(0, Tools.Vdisk("snapshot", "-d", "last", path).ExitCode);
        Assert.Equal(0, Tools.Run("qemu-img", "check", path).ExitCode);
    }

    [Fact]
    public void ErrorsNameTheSnapshot()
    {
        using var dir = new TempDir();
        var path = dir.File("e.qcow2");
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", path, "1M");
        Assert.Equal(0, Tools.Vdisk("snapshot", "-c", "x", path).ExitCode);
        var dup = Tools.Vdisk("snapshot", "-c", "x", path);
        Assert.Equal(1, dup.ExitCode);
        Assert.Contains("Could not create snapshot 'x': A snapshot named 'x' already exists", dup.StdErr);
        var a = Tools.Vdisk("snapshot", "-a", "nope", path);
        Assert.Equal(Tools.Run("qemu-img", "snapshot", "-a", "nope", path).StdErr.Replace("qemu-img", "vdisk"), a.StdErr);
        var d = Tools.Vdisk("snapshot", "-d", "nope", path);
        Assert.Equal(Tools.Run("qemu-img", "snapshot", "-d", "nope", path).StdErr.Replace("qemu-img", "vdisk"), d.StdErr);
        var mix = Tools.Vdisk("snapshot", "-l", "-c", "y", path);
        Assert.Equal(1, mix.ExitCode);
        CheckClean(path);
    }

    [Fact]
    public void FiveGibVmStateShowsInQemuAndReadsBack()
    {
        using var dir = new TempDir();
        var path = dir.File("big.qcow2");
        var state = dir.File("state.bin");
        const long size = 5L << 30;
        var tail = new byte[8192];
        new Random(7).NextBytes(tail);
        using (var f = new FileStream(state, FileMode.Create))
        {
            f.SetLength(size);
            f.Position = size - tail.Length;
            f.Write(tail);
            f.Position = 12345;
            f.Write(tail, 0, 100);
        }
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", path, "64M");
        var r = Tools.Vdisk("snapshot", "-c", "big", "--vmstate", state, path);
        Assert.True(r.ExitCode == 0, r.ToString());
        CheckClean(path);
        Assert.Equal(("1", "big", "5 GiB"), QemuList(path).Single());
        using var image = (Qcow2Image)DiskImages.Open(path, new ImageOpenOptions { ReadOnly = true });
        Assert.Equal(size, image.Snapshots.Single().VmStateSize);
        using var view = image.OpenSnapshot("big");
        var back = new byte[tail.Length];
        view.ReadVmState(size - tail.Length, back);
        Assert.Equal(tail, back);
        var head = new byte[100];
        view.ReadVmState(12345, head);
        Assert.Equal(tail[..100], head);
        var json = JsonDocument.Parse(Qemu.MustRun("qemu-img", "info", "--output=json", path).StdOut);
        Assert.Equal(size, json.RootElement.GetProperty("snapshots")[0].GetProperty("vm-state-size").GetInt64());
    }
}
