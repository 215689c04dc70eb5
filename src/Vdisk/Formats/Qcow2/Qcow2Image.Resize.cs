using Vdisk.Images;

namespace Vdisk.Formats.Qcow2;

/// <summary>
/// Resize, with qemu-img's semantics. Growing: the active VM state (past the old end) is dropped first so it
/// never shows up as guest data, then either the size field alone changes or a larger L1 table is written and
/// switched to together with the size. Shrinking: the clusters past the new end are released and the L1 entries
/// past it cleared (durably) before the size field changes; the file is then cut after its last used cluster.
/// A crash at any point leaves the old size or the new one, with leaks at worst.
/// </summary>
public sealed partial class Qcow2Image
{
    protected override async ValueTask ResizeCoreAsync(long size, string preallocation, bool async, CancellationToken ct)
    {
        ThrowIfCorrupt();
        if ((size & 511) != 0)
            throw new DiskImageException(DiskImageErrorKind.InvalidArgument, Path, "The new size must be a multiple of 512");
        if (_snapshots.Count > 0 && _header.Version < 3)
            throw new DiskImageException(DiskImageErrorKind.UnsupportedFeature, Path, "Can't resize a v2 image which has snapshots");
        long old = Size;
        // The grown part must read as zeros, not as what the backing file holds there (or what a shrink left in the
        // old last cluster): QEMU zeroes it whenever the backing file reaches past the old end. Only an image opened
        // with its backing file knows that; one opened without it grows as if it had none.
        bool zeroGrown = size > old && Backing is not null && Backing.Size > old;
        // falloc and full then give the new clusters zeroed host space and mark them allocated (QEMU zeroes through
        // the file instead of with zero clusters); metadata preallocation keeps the zero clusters.
        bool zeroedData = zeroGrown && preallocation is "falloc" or "full";
        if (zeroedData) zeroGrown = false;
        if (zeroGrown && _header.Version < 3)
            throw new DiskImageException(DiskImageErrorKind.UnsupportedFeature, Path, "Failed to zero out new clusters: Operation not supported");
        await LockAsync(async, ct).ConfigureAwait(false);
        try
        {
            if (size == old) return;
            long needed = _header.L1EntriesFor(size);
            await DropVmStateLockedAsync(async, ct).ConfigureAwait(false);
            if (size < old)
            {
                await ReleaseTailAsync(size, needed, async, ct).ConfigureAwait(false);
                await FlushMetadataLockedAsync(async, ct).ConfigureAwait(false);
                await WriteSizeAsync(size, async, ct).ConfigureAwait(false);
                await TruncateFileAsync(async, ct).ConfigureAwait(false);
                return;
            }
            // The larger L1 table comes first, still with the old size, so the zeroing below can map the new area
            // before the size makes it visible.
            if (needed > _l1.Length) await ReplaceL1Async(needed, old, async, ct).ConfigureAwait(false);
        }
        finally { Unlock(); }
        if (zeroGrown) await ZeroGrownAreaAsync(old, size, async, ct).ConfigureAwait(false);
        await LockAsync(async, ct).ConfigureAwait(false);
        try
        {
            // Like the other paths, a resize is a durability point: earlier writes' cached tables (and the zeroing's
            // entries) go first, so a crash leaves the old size or the new one reading zeros.
            await FlushMetadataLockedAsync(async, ct).ConfigureAwait(false);
            await WriteSizeAsync(size, async, ct).ConfigureAwait(false);
        }
        finally { Unlock(); }
        if (zeroedData)
        {
            await ZeroHeadClusterAsync(old, size, async, ct).ConfigureAwait(false);
            Preallocate(preallocation, old, zeroedData: true);
        }
        else if (preallocation != "off") Preallocate(preallocation, old);
    }

    /// <summary>
    /// Fills the cluster holding the old end, when the old end lies inside it: what it reads before the old end,
    /// zeros after it. QEMU's falloc and full grows leave it wholly allocated this way.
    /// </summary>
    private async ValueTask ZeroHeadClusterAsync(long old, long size, bool async, CancellationToken ct)
    {
        long clusterStart = old & ~(long)(ClusterSize - 1);
        if (clusterStart == old) return;
        var cluster = new byte[Math.Min(ClusterSize, size - clusterStart)];
        await ReadCoreAsync(clusterStart, cluster.AsMemory(0, (int)(old - clusterStart)), async, ct).ConfigureAwait(false);
        await WriteClusterAsync(clusterStart, cluster, async, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Makes [old, size) read as zeros, as QEMU's truncate does for an overlay whose backing file is longer than
    /// the old size: zero (sub)clusters from the first (sub)cluster boundary on, written zeros before it (so the
    /// old last cluster gets its data). Preallocated clusters keep their host clusters. The lock is not held.
    /// </summary>
    private async ValueTask ZeroGrownAreaAsync(long old, long size, bool async, CancellationToken ct)
    {
        long unit = 1L << SubclusterBits;
        long zeroStart = Math.Min((old + unit - 1) & ~(unit - 1), size);
        for (long at = zeroStart; at < size;)
        {
            long end = Math.Min(size, ((at >> _clusterBits) + 1) << _clusterBits);
            await ZeroizeAsync(at, end, mayUnmap: false, async, ct, endIsImageEnd: end == size).ConfigureAwait(false);
            at = end;
        }
        if (zeroStart > old) await WriteClusterAsync(old, ZeroCluster[..(int)(zeroStart - old)], async, ct).ConfigureAwait(false);
    }

    /// <summary>Unmaps every cluster wholly past <paramref name="size"/> and clears the L1 entries past the new disk. Caller holds the lock.</summary>
    private async ValueTask ReleaseTailAsync(long size, long neededL1, bool async, CancellationToken ct)
    {
        long firstCluster = (size + ClusterSize - 1) >> _clusterBits;
        long keptEnd = Math.Min(Size + ClusterSize - 1 >> _clusterBits, neededL1 << _l2Bits);
        for (long c = firstCluster; c < keptEnd; c++)
        {
            var l2 = await GetL2TableAsync(c >> _l2Bits, async, ct).ConfigureAwait(false);
            if (l2 is null)
            {
                c = (((c >> _l2Bits) + 1) << _l2Bits) - 1;
                continue;
            }
            var e = ReadEntry(l2, c & (L2Entries - 1));
            if (e.Raw == 0 && e.Bitmap == 0) continue;
            var writable = await GetWritableL2Async(c >> _l2Bits, async, ct).ConfigureAwait(false);
            WriteEntry(writable, c & (L2Entries - 1), 0, 0);
            ReleaseOldCluster(e, discard: true);
        }
        // Tables leave the cache: what they hold must be on disk first.
        await FlushMetadataLockedAsync(async, ct).ConfigureAwait(false);
        await QueueDropL1EntriesFromAsync(neededL1, async, ct).ConfigureAwait(false);
    }

    /// <summary>Cuts the file after the last cluster with a nonzero refcount, as QEMU does after a shrink. Caller holds the lock.</summary>
    private async ValueTask TruncateFileAsync(bool async, CancellationToken ct)
    {
        long fileClusters = (Device.Length + ClusterSize - 1) >> _clusterBits;
        long last = fileClusters - 1;
        while (last > 0 && await _refcounts.GetAsync(last, async, ct).ConfigureAwait(false) == 0) last--;
        long end = (last + 1) << _clusterBits;
        _fileLengthSeen = 0;
        if (end < Device.Length) await Device.SetLengthCoreAsync(end, async, ct).ConfigureAwait(false);
    }
}
