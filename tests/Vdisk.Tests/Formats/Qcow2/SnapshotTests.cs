using System.Buffers.Binary;
using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Tests.Formats.Qcow2;

/// <summary>Snapshots on an in-memory image: data, refcounts (the built-in check), VM state, errors.</summary>
public class SnapshotTests
{
    internal static (MemoryBlockDevice Device, Func<Qcow2Image> Open) Fresh(long size = 64L << 20, string options = "")
    {
        var device = new MemoryBlockDevice(name: "snap.qcow2");
        var opts = options.Length == 0 ? new Dictionary<string, string>() : options.Split(',').Select(p => p.Split('=')).ToDictionary(p => p[0], p => p[1]);
        new Vdisk.Formats.Qcow2.Qcow2Format().Create(device, new ImageCreateOptions { Size = size, Options = opts });
        return (device, () => Qcow2Image.Open(new BorrowedBlockDevice(device), new ImageOpenOptions()));
    }

    private static byte[] Fill(int length, byte value) => Enumerable.Repeat(value, length).ToArray();

    private static void AssertClean(Qcow2Image image)
    {
        var r = image.Check();
        Assert.True(r.IsClean, string.Join("\n", r.Messages));
    }

    [Theory]
    [InlineData("")]
    [InlineData("cluster_size=4096")]
    [InlineData("compat=0.10")]
    [InlineData("extended_l2=on")]
    public void CreateWriteApplyDeleteKeepDataAndRefcountsRight(string options)
    {
        var (_, open) = Fresh(options: options);
        using var image = open();
        image.Write(0, Fill(3 << 20, 1).AsSpan());
        var s1 = image.CreateSnapshot("one");
        Assert.Equal(("1", "one", 0L, image.Size), (s1.Id, s1.Name, s1.VmStateSize, s1.DiskSize));
        AssertClean(image);
        image.Write(1 << 20, Fill(1 << 20, 2).AsSpan());
        image.CreateSnapshot("two");
        image.Write(0, Fill(4096, 3).AsSpan());
        AssertClean(image);

        using (var view = image.OpenSnapshot("one"))
        {
            var b = new byte[3 << 20];
            view.Read(0, b.AsSpan());
            Assert.All(b, x => Assert.Equal(1, x));
            Assert.True(view.IsReadOnly);
        }
        image.ApplySnapshot("1");
        AssertClean(image);
        var all = new byte[3 << 20];
        image.Read(0, all.AsSpan());
        Assert.All(all, x => Assert.Equal(1, x));
        image.DeleteSnapshot("one");
        AssertClean(image);
        image.Write(2 << 20, Fill(4096, 9).AsSpan());
        image.DeleteSnapshot("two");
        AssertClean(image);
        Assert.Empty(image.Snapshots);
        image.Read(0, all.AsSpan());
        Assert.Equal(9, all[2 << 20]);
        Assert.Equal(1, all[(2 << 20) + 4096]);
    }

    [Fact]
    public void SnapshotsSurviveReopenAndIdsFollowQemu()
    {
        var (_, open) = Fresh();
        using (var image = open())
        {
            image.CreateSnapshot("a");
            image.CreateSnapshot("b");
            image.DeleteSnapshot("a");
            image.CreateSnapshot("c");
        }
        using var again = open();
        Assert.Equal(new[] { ("2", "b"), ("3", "c") }, again.Snapshots.Select(s => (s.Id, s.Name)));
        AssertClean(again);
    }

    [Fact]
    public void DuplicateAndUnknownNamesAreClearErrors()
    {
        var (_, open) = Fresh();
        using var image = open();
        image.CreateSnapshot("a");
        Assert.Contains("already exists", Assert.Throws<DiskImageException>(() => image.CreateSnapshot("a")).Message);
        Assert.Equal(DiskImageErrorKind.NotFound, Assert.Throws<DiskImageException>(() => image.ApplySnapshot("zz")).Kind);
        Assert.Equal(DiskImageErrorKind.NotFound, Assert.Throws<DiskImageException>(() => image.DeleteSnapshot("zz")).Kind);
        Assert.Equal(DiskImageErrorKind.NotFound, Assert.Throws<DiskImageException>(() => image.OpenSnapshot("zz")).Kind);
        Assert.Single(image.Snapshots);
    }

    [Fact]
    public void VmStateIsStoredPastTheDiskAndReadBackFromTheSnapshot()
    {
        var (_, open) = Fresh(size: 1L << 20);
        using var image = open();
        var state = new byte[3_000_001];
        new Random(5).NextBytes(state);
        Array.Clear(state, 1 << 20, 1 << 20); // a zero megabyte stays a hole
        var s = image.CreateSnapshot("vm", new MemoryStream(state));
        Assert.Equal(state.Length, s.VmStateSize);
        AssertClean(image);
        using var view = image.OpenSnapshot("vm");
        Assert.Equal(state.Length, view.VmStateSize);
        var back = new MemoryStream();
        view.LoadVmState(back);
        Assert.Equal(state, back.ToArray());
        // The active image no longer maps it (QEMU drops it after the snapshot).
        var tail = new byte[4096];
        image.ReadVmState(0, tail);
        Assert.All(tail, b => Assert.Equal(0, b));
    }

    [Fact]
    public void CorruptSnapshotTablesAreRefused()
    {
        var (device, open) = Fresh();
        using (var image = open()) image.CreateSnapshot("a");
        var header = new byte[72];
        device.Read(0, header.AsSpan());
        long table = (long)BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(64));
        var extra = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(extra, 4096);
        device.Write(table + 36, extra.AsSpan());
        var ex = Assert.Throws<DiskImageException>(() => open());
        Assert.Contains("Too much extra metadata", ex.Message);

        BinaryPrimitives.WriteUInt32BigEndian(extra, 24);
        device.Write(table + 36, extra.AsSpan());
        BinaryPrimitives.WriteUInt32BigEndian(extra, 0x10000000); // L1 size far too large
        device.Write(table + 8, extra.AsSpan());
        using var image2 = open();
        Assert.Single(image2.Snapshots); // listing works
        Assert.Contains("Snapshot L1 table too large", Assert.Throws<DiskImageException>(() => image2.ApplySnapshot("a")).Message);
    }

    [Fact]
    public void ApplyRestoresTheSnapshotsDiskSize()
    {
        var (_, open) = Fresh(size: 8L << 20);
        using var image = open();
        image.Write(0, Fill(4096, 4).AsSpan());
        image.CreateSnapshot("small");
        image.Resize(3L << 30);
        image.Write((3L << 30) - 4096, Fill(4096, 5).AsSpan());
        AssertClean(image);
        image.ApplySnapshot("small");
        Assert.Equal(8L << 20, image.Size);
        AssertClean(image);
        var b = new byte[4096];
        image.Read(0, b.AsSpan());
        Assert.All(b, x => Assert.Equal(4, x));
    }
}
