using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Formats.Qcow2.OnDisk;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Tests.Formats.Qcow2;

/// <summary>Cluster allocation, deferred frees and refcount limits, on a freshly created image's refcount structures.</summary>
public class RefcountTableTests
{
    /// <summary>A new image's refcount table, as the image would load it.</summary>
    private static (RefcountTable Table, MemoryBlockDevice Device) Fresh(int clusterSize = 65536, int refcountBits = 16)
    {
        var device = new MemoryBlockDevice(name: "refcounts.qcow2");
        new Qcow2Format().Create(device, new ImageCreateOptions
        {
            Size = 64L << 20,
            Options = new Dictionary<string, string> { ["cluster_size"] = $"{clusterSize}", ["refcount_bits"] = $"{refcountBits}" },
        });
        var cluster0 = new byte[clusterSize];
        device.Read(0, cluster0.AsSpan());
        var header = Qcow2Header.Parse(cluster0, device.Name);
        var entries = RefcountTable.LoadTableAsync(device, header, false).GetAwaiter().GetResult();
        var overlap = new OverlapChecker(header.ClusterBits);
        var table = new RefcountTable(device, header, entries, overlap, 4, (_, _, _) => ValueTask.CompletedTask);
        return (table, device);
    }

    [Fact]
    public async Task NewImageLayoutIsCountedAndAllocationContinuesAfterIt()
    {
        var (t, _) = Fresh();
        // qemu-img's layout: header, refcount table, refcount block, L1 table.
        for (long c = 0; c < 4; c++) Assert.Equal(1UL, await t.GetAsync(c, false));
        Assert.Equal(0UL, await t.GetAsync(4, false));
        Assert.Equal(4L << 16, await t.AllocateAsync(1, false));
        Assert.Equal(5L << 16, await t.AllocateAsync(1, true));
        Assert.Equal(6L << 16, await t.AllocateAsync(3, false));
        for (long c = 4; c < 9; c++) Assert.Equal(1UL, await t.GetAsync(c, false));
    }

    [Fact]
    public async Task FreedClusterIsNotReusedUntilPendingFreesAreApplied()
    {
        var (t, _) = Fresh();
        long a = await t.AllocateAsync(1, false);
        long b = await t.AllocateAsync(1, false);
        t.QueueFree(a, 65536, discard: false);
        Assert.True(t.HasPendingFrees);
        Assert.Equal(1UL, await t.GetAsync(a >> 16, false)); // still referenced until the L2 update is durable
        long c = await t.AllocateAsync(1, false);
        Assert.NotEqual(a, c);
        Assert.Equal(b + 65536, c);

        await t.ApplyPendingFreesAsync(false, default);
        Assert.False(t.HasPendingFrees);
        Assert.Equal(0UL, await t.GetAsync(a >> 16, false));
        Assert.Equal(a, await t.AllocateAsync(1, false)); // now the hole is reused first
    }

    [Fact]
    public async Task DiscardingFreeReleasesTheHostRangeOnlyWhenTheLastReferenceGoes()
    {
        var (t, device) = Fresh();
        long a = await t.AllocateAsync(1, false);
        device.Write(a, Enumerable.Repeat((byte)0x5A, 65536).ToArray().AsSpan());
        await t.UpdateAsync(a >> 16, 1, false); // shared: refcount 2
        t.QueueFree(a, 65536, discard: true);
        await t.ApplyPendingFreesAsync(false, default);
        Assert.Equal(1UL, await t.GetAsync(a >> 16, false));
        Assert.Equal(0x5A, device.ToArray()[a]);
        t.QueueFree(a, 65536, discard: true);
        await t.ApplyPendingFreesAsync(true, default);
        Assert.Equal(0UL, await t.GetAsync(a >> 16, false));
        Assert.Equal(0, device.ToArray()[a]);
    }

    [Fact]
    public async Task RefcountCannotExceedItsWidthOrDropBelowZero()
    {
        var (t, _) = Fresh(4096, refcountBits: 1);
        long a = await t.AllocateAsync(1, false) >> 12;
        var over = await Assert.ThrowsAsync<DiskImageException>(async () => await t.UpdateAsync(a, 1, false));
        Assert.Equal(DiskImageErrorKind.InvalidArgument, over.Kind);
        Assert.Contains("would exceed 1", over.Message);
        Assert.Equal(1UL, await t.GetAsync(a, false)); // unchanged by the refused update

        await t.UpdateAsync(a, -1, false);
        var under = await Assert.ThrowsAsync<CorruptImageException>(async () => await t.UpdateAsync(a, -1, false));
        Assert.Contains("below zero", under.Message);
    }

    [Fact]
    public async Task DirtyBlocksReachTheDeviceOnWriteBack()
    {
        var (t, device) = Fresh(4096, refcountBits: 8);
        long a = await t.AllocateAsync(2, false) >> 12;
        Assert.True(t.HasDirty);
        await t.WriteBackAsync(false, default);
        Assert.False(t.HasDirty);
        // 4 KiB clusters, 8-bit refcounts: the block at cluster 2 holds one byte per cluster.
        var block = new byte[4096];
        device.Read(2 * 4096, block.AsSpan());
        Assert.Equal(new byte[] { 1, 1, 1, 1, 1, 1, 0 }, block[..(int)(a + 3)]);
    }
}
