using System.Buffers.Binary;
using Vdisk.Formats.Qcow2.OnDisk;

namespace Vdisk.Formats.Qcow2;

/// <summary>
/// Metadata write-back order. Guest data and refcount blocks reach the disk before the L2 tables that reference
/// their clusters (a barrier precedes every L2 write-back, so an L2 entry never points at data that may not have
/// landed), L2 tables before the L1 entries that point to them, with a flush (barrier) between each step. Refcount
/// decrements wait until the L2 update that dropped the reference is durable, so a crash leaves at most leaks
/// and a freed cluster is never reused while a durable L2 entry may still point to it.
/// </summary>
public sealed partial class Qcow2Image
{
    protected override async ValueTask FlushCoreAsync(bool async, CancellationToken ct)
    {
        await LockAsync(async, ct).ConfigureAwait(false);
        try { await FlushMetadataLockedAsync(async, ct).ConfigureAwait(false); }
        finally { Unlock(); }
    }

    private async ValueTask FlushMetadataLockedAsync(bool async, CancellationToken ct)
    {
        if (_corrupt) return;
        // The L2 cache's dependency writes refcounts and the barrier first; with lazy refcounts (and the dirty
        // bit set) refcount blocks stay in the cache.
        await _l2Cache.WriteBackAsync(async, ct).ConfigureAwait(false);
        if (_refcounts.HasDirty && !LazyRefcountsActive)
            await _refcounts.WriteBackAsync(async, ct).ConfigureAwait(false);
        if (_dirtyL1.Count > 0)
        {
            await Device.FlushCoreAsync(async, ct).ConfigureAwait(false);
            await WriteDirtyL1Async(async, ct).ConfigureAwait(false);
        }
        await Device.FlushCoreAsync(async, ct).ConfigureAwait(false);
        if (_refcounts.HasPendingFrees)
        {
            try { await _refcounts.ApplyPendingFreesAsync(async, ct).ConfigureAwait(false); }
            catch (Images.CorruptImageException e) { throw SignalCorruption(e.Problem, e.Offset ?? 0); }
            if (!LazyRefcountsActive)
            {
                await _refcounts.WriteBackAsync(async, ct).ConfigureAwait(false);
                await Device.FlushCoreAsync(async, ct).ConfigureAwait(false);
            }
        }
    }

    /// <summary>
    /// Writes the L1 entries changed since the last flush, in runs of adjacent entries. An entry stays dirty until
    /// its write succeeds, so that after an I/O error the next flush writes it again.
    /// </summary>
    private async ValueTask WriteDirtyL1Async(bool async, CancellationToken ct)
    {
        var indices = _dirtyL1.ToArray();
        int i = 0;
        while (i < indices.Length)
        {
            int j = i;
            while (j + 1 < indices.Length && indices[j + 1] == indices[j] + 1) j++;
            var raw = new byte[(j - i + 1) * 8];
            for (int k = i; k <= j; k++) BinaryPrimitives.WriteUInt64BigEndian(raw.AsSpan((k - i) * 8), (ulong)_l1[indices[k]]);
            long offset = _header.L1TableOffset + indices[i] * 8L;
            var hit = _overlap.FindOverlap(offset, raw.Length, MetadataKind.ActiveL1);
            if (hit != MetadataKind.None)
                throw SignalCorruption($"Preventing invalid write on metadata (overlaps with {OverlapChecker.Describe(hit)})", offset);
            await Device.WriteCoreAsync(offset, raw, async, ct).ConfigureAwait(false);
            for (int k = i; k <= j; k++) _dirtyL1.Remove(indices[k]);
            i = j + 1;
        }
    }

    /// <summary>Refcounts may lag behind L2 tables only while the dirty bit is durable on disk.</summary>
    private bool LazyRefcountsActive => _lazyRefcounts && _header.Incompatible.HasFlag(IncompatibleFeatures.Dirty);

    /// <summary>
    /// The L2 cache's dependencies, made durable before any L2 table is written: the refcount blocks, and the data
    /// of every cluster linked since the last such barrier. Without the second, an L2 entry could land while its
    /// data does not, and the guest would read whatever the host cluster held before: data of another guest
    /// offset when the cluster was freed and reused, or stale data of a preallocated zero cluster.
    /// </summary>
    private async ValueTask WriteBackRefcountsFirstAsync(bool async)
    {
        bool flush = _linkedSinceBarrier;
        if (_refcounts.HasDirty && !LazyRefcountsActive)
        {
            await _refcounts.WriteBackAsync(async, default).ConfigureAwait(false);
            flush = true;
        }
        if (!flush) return;
        await Device.FlushCoreAsync(async, default).ConfigureAwait(false);
        _linkedSinceBarrier = false;
    }

    /// <summary>An L2 entry in the cache points to data written since the last barrier before an L2 write-back.</summary>
    private bool _linkedSinceBarrier;

    /// <summary>Points the header at a relocated refcount table with one 12-byte write (offset and cluster count).</summary>
    private async ValueTask SwitchRefcountTableAsync(long offset, uint clusters, bool async)
    {
        var raw = new byte[12];
        BinaryPrimitives.WriteUInt64BigEndian(raw, (ulong)offset);
        BinaryPrimitives.WriteUInt32BigEndian(raw.AsSpan(8), clusters);
        await Device.WriteCoreAsync(HeaderField.RefcountTableOffset, raw, async, default).ConfigureAwait(false);
        _header.RefcountTableOffset = offset;
        _header.RefcountTableClusters = clusters;
    }
}
