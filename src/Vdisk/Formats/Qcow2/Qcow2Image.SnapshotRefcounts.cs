using System.Buffers.Binary;
using Vdisk.Formats.Qcow2.OnDisk;

namespace Vdisk.Formats.Qcow2;

/// <summary>
/// Refcounts of whole L1 trees. A cluster's refcount counts the L1 trees that reach it (QEMU's model, and what
/// check counts): taking a snapshot adds one to every L2 table and data cluster of the active tree, deleting
/// one takes one away, and the active tree's COPIED flags then say again which clusters it owns alone.
/// </summary>
public sealed partial class Qcow2Image
{
    /// <summary>Reads an L1 table from disk (a snapshot's), <paramref name="entries"/> entries.</summary>
    private async ValueTask<long[]> ReadL1Async(long offset, long entries, bool async, CancellationToken ct)
    {
        var raw = new byte[entries * 8];
        await Device.ReadCoreAsync(offset, raw, async, ct).ConfigureAwait(false);
        var l1 = new long[entries];
        for (int i = 0; i < l1.Length; i++) l1[i] = (long)BinaryPrimitives.ReadUInt64BigEndian(raw.AsSpan(i * 8));
        return l1;
    }

    /// <summary>
    /// Adds <paramref name="delta"/> (+1 or -1) to every L2 table and host cluster of an L1 tree. With
    /// <paramref name="clearCopied"/> the tree is the active one and loses its COPIED flags (it is now shared).
    /// A table whose last reference goes is dropped from the cache. Caller holds the lock and has made the
    /// change that justifies a decrement durable.
    /// </summary>
    private async ValueTask ChangeTreeRefcountsAsync(long[] l1, long delta, bool clearCopied, bool async, CancellationToken ct)
    {
        var clusters = new List<long>((int)L2Entries);
        for (int i = 0; i < l1.Length; i++)
        {
            long l2Offset = l1[i] & (long)Entry.L1OffsetMask;
            if (l2Offset == 0) continue;
            if ((l2Offset & (ClusterSize - 1)) != 0)
                throw SignalCorruption($"L2 table offset 0x{l2Offset:x} unaligned (L1 index: 0x{i:x})", l2Offset);
            // One pass over the table (nothing awaited, so the cached table stays put), then the refcounts in a batch.
            var l2 = await _l2Cache.GetAsync(l2Offset, async, ct).ConfigureAwait(false);
            clusters.Clear();
            for (long j = NextUsedEntry(l2.Data, 0); j < L2Entries; j = NextUsedEntry(l2.Data, j + 1))
            {
                var e = ReadEntry(l2, j);
                AddHostClusters(e, clusters);
                if (clearCopied && e.IsCopied) WriteEntry(l2, j, e.Raw & ~Entry.Copied, e.Bitmap);
            }
            clusters.Add(l2Offset >> _clusterBits);
            await _refcounts.UpdateManyAsync(clusters, delta, async, ct).ConfigureAwait(false);
            if (delta < 0 && await _refcounts.GetAsync(l2Offset >> _clusterBits, async, ct).ConfigureAwait(false) == 0)
                _l2Cache.Remove(l2Offset);
            if (clearCopied && (l1[i] & unchecked((long)Entry.Copied)) != 0)
            {
                l1[i] &= ~unchecked((long)Entry.Copied);
                if (ReferenceEquals(l1, _l1)) _dirtyL1.Add(i);
            }
        }
    }

    /// <summary>The host clusters an L2 entry holds a reference to (a compressed one may span two).</summary>
    private void AddHostClusters(L2Entry e, List<long> clusters)
    {
        switch (e.Kind(_extended))
        {
            case ClusterKind.Normal or ClusterKind.ZeroAllocated:
                if ((e.HostOffset & (ClusterSize - 1)) != 0)
                    throw SignalCorruption($"Cluster allocation offset 0x{e.HostOffset:x} unaligned (L2 entry 0x{e.Raw:x})", e.HostOffset);
                clusters.Add(e.HostOffset >> _clusterBits);
                break;
            case ClusterKind.Compressed:
                var (off, sectors) = e.CompressedExtent(_clusterBits);
                for (long c = off >> _clusterBits; c <= ((off & ~511L) + sectors * 512L - 1) >> _clusterBits; c++)
                    clusters.Add(c);
                break;
        }
    }

    /// <summary>
    /// Queues the release of one L2 table the active L1 no longer points to, and of the active tree's reference
    /// to everything it maps; applied once the L1 change is durable. Caller holds the lock.
    /// </summary>
    private async ValueTask QueueDropL2TreeAsync(long l2Offset, bool async, CancellationToken ct)
    {
        var l2 = await _l2Cache.GetAsync(l2Offset, async, ct).ConfigureAwait(false);
        for (long j = 0; j < L2Entries; j++) ReleaseOldCluster(ReadEntry(l2, j), discard: false);
        _refcounts.QueueFree(l2Offset, ClusterSize, discard: false);
        _l2Cache.Remove(l2Offset);
        _overlap.RemoveCluster(l2Offset);
    }

    /// <summary>Clears the active L1 entries from <paramref name="first"/> on, queueing the release of their trees. Caller holds the lock, after a flush.</summary>
    private async ValueTask QueueDropL1EntriesFromAsync(long first, bool async, CancellationToken ct)
    {
        for (long i = first; i < _l1.Length; i++)
        {
            long l2 = _l1[i] & (long)Entry.L1OffsetMask;
            if (l2 == 0) continue;
            await QueueDropL2TreeAsync(l2, async, ct).ConfigureAwait(false);
            _l1[i] = 0;
            _dirtyL1.Add((int)i);
        }
    }

    /// <summary>Drops one reference to each cluster of a host range now: whatever pointed to it is durably gone.</summary>
    private async ValueTask FreeNowAsync(long offset, long bytes, bool async, CancellationToken ct)
    {
        if (bytes <= 0) return;
        for (long c = offset >> _clusterBits; c <= (offset + bytes - 1) >> _clusterBits; c++)
            await _refcounts.UpdateAsync(c, -1, async, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Sets COPIED on exactly the active L1 and L2 entries whose cluster has refcount 1 (QEMU's refcount update
    /// with addend 0), after a snapshot was deleted or applied. Caller holds the lock.
    /// </summary>
    private async ValueTask RecomputeCopiedFlagsAsync(bool async, CancellationToken ct)
    {
        long copied = unchecked((long)Entry.Copied);
        var clusters = new List<long>((int)L2Entries);
        var slots = new List<long>((int)L2Entries);
        var refcounts = new ulong[L2Entries];
        for (int i = 0; i < _l1.Length; i++)
        {
            long l2Offset = _l1[i] & (long)Entry.L1OffsetMask;
            if (l2Offset == 0) continue;
            bool owned = await _refcounts.GetAsync(l2Offset >> _clusterBits, async, ct).ConfigureAwait(false) == 1;
            long wanted = owned ? _l1[i] | copied : _l1[i] & ~copied;
            if (wanted != _l1[i])
            {
                _l1[i] = wanted;
                _dirtyL1.Add(i);
            }
            var l2 = await _l2Cache.GetAsync(l2Offset, async, ct).ConfigureAwait(false);
            clusters.Clear();
            slots.Clear();
            for (long j = NextUsedEntry(l2.Data, 0); j < L2Entries; j = NextUsedEntry(l2.Data, j + 1))
            {
                var e = ReadEntry(l2, j);
                if (e.Kind(_extended) is not (ClusterKind.Normal or ClusterKind.ZeroAllocated)) continue;
                clusters.Add(e.HostOffset >> _clusterBits);
                slots.Add(j);
            }
            await _refcounts.GetManyAsync(clusters, refcounts, async, ct).ConfigureAwait(false);
            l2 = await _l2Cache.GetAsync(l2Offset, async, ct).ConfigureAwait(false);
            for (int k = 0; k < slots.Count; k++)
            {
                var e = ReadEntry(l2, slots[k]);
                bool one = refcounts[k] == 1;
                if (one != e.IsCopied) WriteEntry(l2, slots[k], one ? e.Raw | Entry.Copied : e.Raw & ~Entry.Copied, e.Bitmap);
            }
        }
    }
}
