using Vdisk.Formats.Qcow2.OnDisk;

namespace Vdisk.Formats.Qcow2;

/// <summary>
/// Write-zeroes and discard as QEMU's qcow2 driver does them: whole (sub)clusters change their L2 entries
/// (zero flag, zero subclusters, or unallocation); partial (sub)clusters get real zeros (write-zeroes, unless the
/// rest already reads as zeros) or are left alone (discard).
/// </summary>
public sealed partial class Qcow2Image
{
    private static readonly ReadOnlyMemory<byte> ZeroCluster = new byte[1 << Qcow2Header.MaxClusterBits];

    protected override async ValueTask WriteZeroesCoreAsync(long offset, long length, bool mayUnmap, bool async, CancellationToken ct)
    {
        ThrowIfCorrupt();
        long end = offset + length;
        int unit = 1 << SubclusterBits;
        while (offset < end)
        {
            long clusterEnd = ((offset >> _clusterBits) + 1) << _clusterBits;
            long pieceEnd = Math.Min(end, clusterEnd);
            // Whole units change the L2 entry; an unaligned head or tail does so only when the rest of its unit reads as zeros.
            long alignedStart = (offset + unit - 1) & ~(long)(unit - 1);
            long alignedEnd = pieceEnd == Size ? pieceEnd : pieceEnd & ~(long)(unit - 1);
            if (_header.Version < 3)
            {
                if (offset == clusterEnd - ClusterSize && (pieceEnd == clusterEnd || pieceEnd == Size)
                    && await UnallocateIfBackingAbsentAsync(offset >> _clusterBits, async, ct).ConfigureAwait(false))
                {
                    offset = pieceEnd;
                    continue;
                }
                await WriteClusterAsync(offset, ZeroCluster[..(int)(pieceEnd - offset)], async, ct).ConfigureAwait(false);
            }
            else
            {
                // An unaligned head and tail each lie in one (sub)cluster of their own; whole ones in between.
                long headEnd = Math.Min(pieceEnd, alignedStart);
                if (headEnd > offset) await ZeroPartialUnitAsync(offset, headEnd, mayUnmap, async, ct).ConfigureAwait(false);
                long middleEnd = Math.Max(headEnd, alignedEnd);
                if (middleEnd > headEnd && !await ZeroizeAsync(headEnd, middleEnd, mayUnmap, async, ct).ConfigureAwait(false))
                    await WriteClusterAsync(headEnd, ZeroCluster[..(int)(middleEnd - headEnd)], async, ct).ConfigureAwait(false);
                if (pieceEnd > middleEnd) await ZeroPartialUnitAsync(middleEnd, pieceEnd, mayUnmap, async, ct).ConfigureAwait(false);
            }
            offset = pieceEnd;
        }
        if (_writeThrough) await FlushCoreAsync(async, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Zeros for part of one (sub)cluster. As QEMU: when the rest of that (sub)cluster already reads as zeros (the
    /// part past the end of the disk counts as zeros) and it holds no data of this image, the whole (sub)cluster
    /// becomes a zero one; otherwise zeros are written (allocating the cluster).
    /// </summary>
    private async ValueTask ZeroPartialUnitAsync(long start, long end, bool mayUnmap, bool async, CancellationToken ct)
    {
        long unit = 1L << SubclusterBits;
        long unitStart = start & ~(unit - 1);
        long unitEnd = Math.Min(unitStart + unit, Size);
        // The backing chain is read-only, so what it reads may be asked first, outside the lock. What this image holds
        // is judged in the same locked step that changes the entry, with no allocation in flight on the cluster
        // (ChangeEntryAsync): a write into the rest of the (sub)cluster either linked its data before (then this
        // writes zeros, in place) or starts after and finds a zero (sub)cluster. Judged apart, a write landing in
        // between would be wiped by the zero flag.
        bool belowZero = await BackingReadsZeroAsync(unitStart, start, async, ct).ConfigureAwait(false)
            && await BackingReadsZeroAsync(end, unitEnd, async, ct).ConfigureAwait(false);
        int sub = _extended ? (int)((unitStart >> SubclusterBits) & 31) : 0;
        bool RestReadsZero(L2Entry entry) => entry.SubclusterKind(_extended, sub) switch
        {
            ClusterKind.ZeroPlain or ClusterKind.ZeroAllocated => true,
            ClusterKind.Unallocated => belowZero,
            _ => false, // data or compressed: QEMU writes zeros here too, without looking at what the data is
        };
        if (!await ZeroizeAsync(unitStart, unitEnd, mayUnmap, async, ct, precondition: RestReadsZero).ConfigureAwait(false))
            await WriteClusterAsync(start, ZeroCluster[..(int)(end - start)], async, ct).ConfigureAwait(false);
    }

    /// <summary>Whether the backing chain reads [start, end) as zeros (past its end it does), by block status.</summary>
    private async ValueTask<bool> BackingReadsZeroAsync(long start, long end, bool async, CancellationToken ct)
    {
        if (Backing is null) return true;
        end = Math.Min(end, Backing.Size);
        while (start < end)
        {
            var s = async ? await Backing.GetBlockStatusAsync(start, end - start, ct).ConfigureAwait(false)
                : Backing.GetBlockStatus(start, end - start);
            if (!s.Zero) return false;
            start += s.Length;
        }
        return true;
    }

    /// <summary>
    /// Only v3 expresses zeros in L2 entries, and only for whole (sub)clusters; with subclusters a compressed
    /// cluster may still need written zeros unless whole clusters are covered.
    /// </summary>
    public override bool CanZeroWithoutWritingData(long offset, long length)
    {
        if (_header.Version < 3) return false;
        long unit = _extended ? ClusterSize : 1L << SubclusterBits;
        long end = offset + length;
        return offset % unit == 0 && (end % unit == 0 || end == Size);
    }

    /// <summary>v2 has no zero flag: a whole cluster with nothing below it can simply become unallocated.</summary>
    private async ValueTask<bool> UnallocateIfBackingAbsentAsync(long guestCluster, bool async, CancellationToken ct)
    {
        if (Backing is not null && (guestCluster << _clusterBits) < Backing.Size) return false;
        await ChangeEntryAsync(guestCluster, async, ct, old => (0, 0, true)).ConfigureAwait(false);
        return true;
    }

    /// <summary>
    /// Makes the whole (sub)clusters of [start, end) read as zeros through their L2 entries (one cluster at most).
    /// False when the entry cannot express it (part of a compressed cluster): the caller writes zeros instead.
    /// <paramref name="endIsImageEnd"/>: <paramref name="end"/> is the end of the disk even though the size field does
    /// not say so yet (a grow zeroes its new area before it writes the new size). <paramref name="precondition"/>:
    /// judged on the current entry under the metadata lock; false leaves the entry alone and returns false.
    /// </summary>
    private async ValueTask<bool> ZeroizeAsync(long start, long end, bool mayUnmap, bool async, CancellationToken ct, bool endIsImageEnd = false,
        Func<L2Entry, bool>? precondition = null)
    {
        long guestCluster = start >> _clusterBits;
        bool whole = (start & (ClusterSize - 1)) == 0 && (end - start == ClusterSize || end == Size || endIsImageEnd);
        bool expressible = true;
        await ChangeEntryAsync(guestCluster, async, ct, old =>
        {
            // Runs again from the start after waiting for an allocation in flight, so the flag is set on every try.
            expressible = precondition?.Invoke(old) ?? true;
            if (!expressible) return (old.Raw, old.Bitmap, false);
            var kind = old.Kind(_extended);
            bool allocated = kind is ClusterKind.Normal or ClusterKind.ZeroAllocated or ClusterKind.Compressed;
            if (_extended)
            {
                if (whole)
                {
                    bool unmap = kind == ClusterKind.Compressed || (mayUnmap && allocated);
                    return (unmap ? 0 : old.Raw, Entry.AllZeroBitmap, unmap);
                }
                if (kind == ClusterKind.Compressed)
                {
                    expressible = false;
                    return (old.Raw, old.Bitmap, false);
                }
                int s0 = (int)((start & (ClusterSize - 1)) >> SubclusterBits);
                int s1 = (int)(((end - 1) & (ClusterSize - 1)) >> SubclusterBits);
                ulong touched = ((2UL << s1) - 1) & ~((1UL << s0) - 1);
                return (old.Raw, (old.Bitmap & ~touched) | (touched << 32), false);
            }
            bool drop = kind == ClusterKind.Compressed || (mayUnmap && allocated);
            return (drop ? Entry.ZeroFlag : old.Raw | Entry.ZeroFlag, 0, drop);
        }).ConfigureAwait(false);
        return expressible;
    }

    protected override async ValueTask DiscardCoreAsync(long offset, long length, bool async, CancellationToken ct)
    {
        ThrowIfCorrupt();
        // v2 has no zero flag: an unallocated cluster would expose stale backing data, so (like QEMU) do nothing.
        if (_header.Version < 3 && _header.BackingFile is not null) return;
        // Only clusters the request covers completely are discarded (and the partial cluster at the image end).
        long first = (offset + ClusterSize - 1) >> _clusterBits;
        long endOffset = offset + length;
        long last = endOffset == Size ? (endOffset + ClusterSize - 1) >> _clusterBits : endOffset >> _clusterBits;
        for (long c = first; c < last; c++)
        {
            await ChangeEntryAsync(c, async, ct, old =>
            {
                var kind = old.Kind(_extended);
                bool allocated = kind is ClusterKind.Normal or ClusterKind.ZeroAllocated or ClusterKind.Compressed;
                if (Backing is null && !allocated) return (0, 0, false);
                if (_extended) return (0, Entry.AllZeroBitmap, allocated);
                return (_header.Version >= 3 ? Entry.ZeroFlag : 0, 0, allocated);
            }, discardFreed: true).ConfigureAwait(false);
        }
        if (_writeThrough) await FlushCoreAsync(async, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Replaces one L2 entry (waiting for an allocation in flight on that cluster), and queues the release of the
    /// old host cluster when <c>change</c> says so.
    /// </summary>
    private async ValueTask ChangeEntryAsync(long guestCluster, bool async, CancellationToken ct,
        Func<L2Entry, (ulong Raw, ulong Bitmap, bool Release)> change, bool discardFreed = false)
    {
        while (true)
        {
            TaskCompletionSource? busy;
            await LockAsync(async, ct).ConfigureAwait(false);
            try
            {
                if (!_inFlight.TryGetValue(guestCluster, out busy))
                {
                    var old = await LookupAsync(guestCluster, async, ct).ConfigureAwait(false);
                    var (raw, bitmap, release) = change(old);
                    if (raw == old.Raw && bitmap == old.Bitmap) return;
                    if (raw == 0 && bitmap == 0 && ((guestCluster >> _l2Bits) >= _l1.Length || _l1[guestCluster >> _l2Bits] == 0)) return;
                    var l2 = await GetWritableL2Async(guestCluster >> _l2Bits, async, ct).ConfigureAwait(false);
                    // Re-read: making the table writable may have copied it (entries lose COPIED).
                    var current = ReadEntry(l2, guestCluster & (L2Entries - 1));
                    if (!release && current.Raw != old.Raw && (long)(raw & Entry.L2OffsetMask) == old.HostOffset) raw = (raw & ~Entry.Copied) | (current.Raw & Entry.Copied);
                    WriteEntry(l2, guestCluster & (L2Entries - 1), raw, bitmap);
                    if (release) ReleaseOldCluster(old, discardFreed);
                    return;
                }
            }
            finally { Unlock(); }
            if (async) await busy.Task.ConfigureAwait(false); else busy.Task.GetAwaiter().GetResult();
        }
    }
}
