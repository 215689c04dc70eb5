using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Tests.Formats.Qcow2;

/// <summary>qcow2 resize: data kept, zeros past the old end, refcounts clean, and a crash at every flush leaves old or new size.</summary>
public class ResizeTests
{
    private static byte[] Fill(int length, byte value) => Enumerable.Repeat(value, length).ToArray();

    /// <summary>Resizes with the <paramref name="nth"/> flush failing, then abandons the image; true if the resize completed.</summary>
    private static bool ResizeFailingFlush(Qcow2Image image, FaultInjectingBlockDevice faults, int nth, long to)
    {
        faults.AddRule(new FaultRule(DeviceOperation.Flush) { Nth = nth, Once = true });
        bool completed;
        try
        {
            image.Resize(to);
            completed = true;
        }
        catch (IOException)
        {
            completed = false;
        }
        image.Abandon();
        return completed;
    }

    [Theory]
    [InlineData(64L << 20, 2L << 40)]  // the L1 table must move
    [InlineData(64L << 20, 300L << 20)] // the L1 table is large enough
    [InlineData(64L << 20, 33L << 20)] // shrink inside one L2 table's range
    [InlineData(1L << 30, 100L << 20)] // shrink drops whole L2 tables
    public void CrashAtEveryFlushLeavesOldOrNewSizeAndNoCorruption(long from, long to)
    {
        for (int nth = 1; ; nth++)
        {
            var memory = new MemoryBlockDevice(name: "resize.qcow2");
            new Qcow2Format().Create(memory, new ImageCreateOptions { Size = from });
            var faults = new FaultInjectingBlockDevice(memory);
            var image = Qcow2Image.Open(faults, new ImageOpenOptions());
            long keep = Math.Min(from, to) - (2 << 20);
            image.Write(0, Fill(1 << 20, 1).AsSpan());
            image.Write(keep, Fill(1 << 20, 2).AsSpan());
            image.Write(from - 4096, Fill(4096, 3).AsSpan());
            image.Flush();
            bool completed = ResizeFailingFlush(image, faults, nth, to);
            using (var crashed = Qcow2Image.Open(faults.SimulateCrash(), new ImageOpenOptions()))
            {
                Assert.True(crashed.Size == from || crashed.Size == to, $"flush {nth}: size {crashed.Size}");
                if (completed) Assert.Equal(to, crashed.Size);
                var r = crashed.Check();
                Assert.True(r.Corruptions == 0 && r.CheckErrors == 0, $"flush {nth}: " + string.Join("\n", r.Messages));
                var b = new byte[1 << 20];
                crashed.Read(0, b.AsSpan());
                Assert.All(b, x => Assert.Equal(1, x));
                crashed.Read(keep, b.AsSpan());
                Assert.All(b, x => Assert.Equal(2, x));
                if (crashed.Size == to && to > from)
                {
                    var tail = new byte[4096];
                    crashed.Read(to - 4096, tail.AsSpan());
                    Assert.All(tail, x => Assert.Equal(0, x));
                }
                // Growing again after a shrink must read zeros where the dropped data was.
                if (crashed.Size == to && to < from)
                {
                    crashed.Resize(from);
                    var old = new byte[4096];
                    crashed.Read(from - 4096, old.AsSpan());
                    Assert.All(old, x => Assert.Equal(0, x));
                    Assert.True(crashed.Check().IsClean);
                }
            }
            if (completed) break;
            Assert.True(nth < 50, "resize never completed");
        }
    }

    [Fact]
    public void PreallocatedGrowMapsTheNewPartAndReadsZeros()
    {
        var memory = new MemoryBlockDevice(name: "p.qcow2");
        new Qcow2Format().Create(memory, new ImageCreateOptions { Size = 1L << 20 });
        using var image = Qcow2Image.Open(new BorrowedBlockDevice(memory), new ImageOpenOptions());
        image.Write(0, Fill(4096, 8).AsSpan());
        image.Resize(5L << 20, "metadata");
        var s = image.GetLayerStatus(1L << 20, 4L << 20);
        Assert.Equal(LayerAllocation.Data, s.Allocation);
        var b = new byte[4L << 20];
        image.Read(1L << 20, b.AsSpan());
        Assert.All(b, x => Assert.Equal(0, x));
        Assert.True(image.Check().IsClean);
        Assert.Throws<DiskImageException>(() => image.Resize(1L << 20, "full"));
        Assert.Throws<DiskImageException>(() => image.Resize((2L << 20) + 1));
    }

    [Fact]
    public void ActiveVmStateNeverBecomesGuestDataOnGrow()
    {
        var memory = new MemoryBlockDevice(name: "v.qcow2");
        new Qcow2Format().Create(memory, new ImageCreateOptions { Size = 1L << 20 });
        using var image = Qcow2Image.Open(new BorrowedBlockDevice(memory), new ImageOpenOptions());
        image.SaveVmState(new MemoryStream(Fill(1 << 20, 6)));
        long vmAt = image.VmStateOffset;
        image.Resize(vmAt + (2L << 20));
        var b = new byte[1 << 20];
        image.Read(vmAt, b.AsSpan());
        Assert.All(b, x => Assert.Equal(0, x));
        Assert.True(image.Check().IsClean);
    }

    /// <summary>
    /// An overlay whose backing file reaches past its old end: the grown part must read zeros, not the backing file's
    /// data, and a crash at any flush leaves the old size or the new one reading zeros (the zeroing lands before the size).
    /// </summary>
    [Theory]
    [InlineData(1000L << 10, 3L << 20)]  // the old end inside a cluster; the L1 table is large enough
    [InlineData(1L << 20, 3L << 30)]     // the L1 table must move first
    public void GrowOverALongerBackingFileReadsZerosAndSurvivesACrashAtEveryFlush(long from, long to)
    {
        var backing = new MemoryBlockDevice(name: "base.qcow2");
        new Qcow2Format().Create(backing, new ImageCreateOptions { Size = to });
        using (var b = Qcow2Image.Open(new BorrowedBlockDevice(backing), new ImageOpenOptions()))
        {
            b.Write(0, Fill(2 << 20, 0x44).AsSpan());
            b.Write(to - (1 << 20), Fill(1 << 20, 0x45).AsSpan());
        }
        var options = new ImageOpenOptions { BackingOpener = (_, o) => Qcow2Image.Open(new BorrowedBlockDevice(backing), o) };
        for (int nth = 1; ; nth++)
        {
            var memory = new MemoryBlockDevice(name: "top.qcow2");
            new Qcow2Format().Create(memory, new ImageCreateOptions { Size = from, Options = new Dictionary<string, string> { ["backing_file"] = "base.qcow2" } });
            var faults = new FaultInjectingBlockDevice(memory);
            var image = Qcow2Image.Open(faults, options);
            image.Write(4096, Fill(4096, 1).AsSpan());
            image.Flush();
            bool completed = ResizeFailingFlush(image, faults, nth, to);
            using (var crashed = Qcow2Image.Open(faults.SimulateCrash(), options))
            {
                Assert.True(crashed.Size == from || crashed.Size == to, $"flush {nth}: size {crashed.Size}");
                if (completed) Assert.Equal(to, crashed.Size);
                Assert.True(crashed.Check() is { Corruptions: 0, CheckErrors: 0 }, $"flush {nth}");
                var head = new byte[8192];
                crashed.Read(0, head.AsSpan());
                Assert.All(head.AsSpan(0, 4096).ToArray(), x => Assert.Equal(0x44, x));
                Assert.All(head.AsSpan(4096).ToArray(), x => Assert.Equal(1, x));
                if (crashed.Size == to)
                {
                    var grown = new byte[(int)Math.Min(to - from, 4L << 20)];
                    crashed.Read(from, grown.AsSpan());
                    Assert.True(grown.AsSpan().IndexOfAnyExcept((byte)0) < 0, $"flush {nth}: the grown part reads the backing file");
                    crashed.Read(to - grown.Length, grown.AsSpan());
                    Assert.True(grown.AsSpan().IndexOfAnyExcept((byte)0) < 0, $"flush {nth}: the end reads the backing file");
                }
            }
            if (completed) break;
            Assert.True(nth < 50, "resize never completed");
        }
    }
}
