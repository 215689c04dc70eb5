using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Tests.Formats.Qcow2;

/// <summary>qcow2 resize: data kept, zeros past the old end, refcounts clean, and a crash at every flush leaves old or new size.</summary>
public class ResizeTests
{
    private static byte[] Fill(int length, byte value) => Enumerable.Repeat(value, length).ToArray();

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
}
