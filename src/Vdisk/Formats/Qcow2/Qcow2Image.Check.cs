using System.Buffers.Binary;
using Vdisk.Formats.Qcow2.OnDisk;
using Vdisk.Images;

namespace Vdisk.Formats.Qcow2;

/// <summary>
/// Consistency check and repair (qemu-img check [-r leaks|all]): compare every on-disk refcount with the
/// references counted from the tables, fix leaks and errors as allowed, rebuild the refcount structure when it
/// cannot be trusted, and make the COPIED flags of the active tables match the refcounts.
/// </summary>
public sealed partial class Qcow2Image
{
    protected override async ValueTask<ImageCheckResult> CheckCoreAsync(CheckRepair repair, bool async, CancellationToken ct)
    {
        if (repair != CheckRepair.None && IsReadOnly)
            throw new DiskImageException(DiskImageErrorKind.ReadOnly, Path, "Cannot repair an image opened read-only");
        await LockAsync(async, ct).ConfigureAwait(false);
        try
        {
            if (!IsReadOnly && !_corrupt) await FlushMetadataLockedAsync(async, ct).ConfigureAwait(false);
            var r = new ImageCheckResult { TotalClusters = (Size + ClusterSize - 1) >> _clusterBits };
            var scan = await ScanReferencesAsync(r, repair, async, ct).ConfigureAwait(false);
            if (repair.HasFlag(CheckRepair.Errors) && scan.PastEnd.Count > 0)
            {
                await RepairReferencesPastEndAsync(scan, async, ct).ConfigureAwait(false);
                int fixedPastEnd = scan.PastEnd.Count;
                r = new ImageCheckResult { TotalClusters = r.TotalClusters, CorruptionsFixed = fixedPastEnd };
                scan = await ScanReferencesAsync(r, repair, async, ct).ConfigureAwait(false);
            }
            // As QEMU: compare once without fixing (the report), then, if allowed, again with fixing.
            int corruptionsBeforeCompare = r.Corruptions, leaksBeforeCompare = r.Leaks;
            long highest = await CompareRefcountsAsync(r, scan, CheckRepair.None, async, ct).ConfigureAwait(false);
            bool rebuild = scan.Rebuild || _needsRebuild;
            if (rebuild && repair.HasFlag(CheckRepair.Errors))
            {
                int corruptionsBefore = r.Corruptions, leaksBefore = r.Leaks;
                r.Messages.Add("Rebuilding refcount structure");
                await RebuildRefcountStructureAsync(scan, async, ct).ConfigureAwait(false);
                var again = new ImageCheckResult { TotalClusters = r.TotalClusters };
                var rescan = await ScanReferencesAsync(again, CheckRepair.None, async, ct).ConfigureAwait(false);
                highest = await CompareRefcountsAsync(again, rescan, CheckRepair.None, async, ct).ConfigureAwait(false);
                r.Messages.AddRange(again.Messages);
                r.CorruptionsFixed += Math.Max(0, corruptionsBefore - again.Corruptions);
                r.LeaksFixed += Math.Max(0, leaksBefore - again.Leaks);
                r.Corruptions = again.Corruptions;
                r.Leaks = again.Leaks;
            }
            else if (repair != CheckRepair.None)
            {
                if (rebuild)
                {
                    r.Messages.Add("ERROR need to rebuild refcount structures");
                    r.CheckErrors++;
                }
                else if (r.Leaks > 0 || r.Corruptions > 0)
                {
                    r.Corruptions = corruptionsBeforeCompare;
                    r.Leaks = leaksBeforeCompare;
                    highest = await CompareRefcountsAsync(r, scan, repair, async, ct).ConfigureAwait(false);
                }
            }
            await CheckCopiedFlagsAsync(r, repair, async, ct).ConfigureAwait(false);
            if (!IsReadOnly && repair != CheckRepair.None)
            {
                await FlushMetadataLockedAsync(async, ct).ConfigureAwait(false);
                if (r.Corruptions == 0 && r.CheckErrors == 0) await MarkConsistentAsync(async, ct).ConfigureAwait(false);
            }
            r.ImageEndOffset = (highest + 1) << _clusterBits;
            return r;
        }
        finally
        {
            _needsRebuild = false;
            Unlock();
        }
    }

    private bool _needsRebuild;

    /// <summary>QEMU's compare_refcounts: on-disk refcount against counted references, for every cluster either side knows.</summary>
    private async ValueTask<long> CompareRefcountsAsync(ImageCheckResult r, CheckScan scan, CheckRepair repair, bool async, CancellationToken ct)
    {
        long highest = -1;
        // Clusters of the blocks walked here are compared in the walk; referenced clusters elsewhere after it.
        var walked = new bool[_refcounts.EntryCount];
        int blockBits = _clusterBits + 3 - _refcounts.Order;
        for (int i = 0; i < _refcounts.EntryCount; i++)
        {
            long block = _refcounts.BlockOffset(i);
            if (block == 0 || (block & (ClusterSize - 1)) != 0 || block >> _clusterBits >= scan.FileClusters) continue;
            walked[i] = true;
            var data = (await _refcounts.Blocks.GetAsync(block, async, ct).ConfigureAwait(false)).Data;
            for (int slot = 0; slot < 1 << blockBits; slot++)
            {
                long cluster = ((long)i << blockBits) + slot;
                ulong onDisk = RefcountBlock.Get(data, _refcounts.Order, slot);
                ulong counted = scan.Counts[cluster];
                if (onDisk == counted)
                {
                    if (onDisk != 0) highest = Math.Max(highest, cluster); // the common case, kept out of the async call
                    continue;
                }
                highest = await CompareOneAsync(r, cluster, onDisk, counted, repair, highest, async, ct).ConfigureAwait(false);
                data = (await _refcounts.Blocks.GetAsync(block, async, ct).ConfigureAwait(false)).Data;
            }
        }
        foreach (long cluster in scan.Counts.Referenced())
            if (cluster >> blockBits >= walked.Length || !walked[cluster >> blockBits])
                highest = await CompareOneAsync(r, cluster, 0, scan.Counts[cluster], repair, highest, async, ct).ConfigureAwait(false);
        return highest;
    }

    private async ValueTask<long> CompareOneAsync(ImageCheckResult r, long cluster, ulong onDisk, ulong counted, CheckRepair repair, long highest, bool async, CancellationToken ct)
    {
        if (onDisk == counted) return Math.Max(highest, cluster);
        bool fix = false;
        if (onDisk == 0) _needsRebuild = true;
        else if (onDisk > counted && repair.HasFlag(CheckRepair.Leaks)) fix = true;
        else if (onDisk < counted && repair.HasFlag(CheckRepair.Errors)) fix = true;
        string what = fix ? "Repairing" : onDisk < counted ? "ERROR" : "Leaked";
        r.Messages.Add($"{what} cluster {cluster} refcount={onDisk} reference={counted}");
        if (fix)
        {
            await _refcounts.UpdateAsync(cluster, (long)counted - (long)onDisk, async, ct).ConfigureAwait(false);
            if (onDisk > counted) r.LeaksFixed++; else r.CorruptionsFixed++;
            return counted > 0 ? Math.Max(highest, cluster) : highest;
        }
        if (onDisk < counted) r.Corruptions++; else r.Leaks++;
        return Math.Max(highest, cluster);
    }

    /// <summary>
    /// Data referenced past the end of the file reads as zeros; keep exactly that by extending the file over it,
    /// unless the offset is absurd, in which case the entry becomes a zero cluster (v3) or unallocated (v2).
    /// </summary>
    private async ValueTask RepairReferencesPastEndAsync(CheckScan scan, bool async, CancellationToken ct)
    {
        long length = Device.Length;
        long limit = 2 * length + (1L << 30);
        long newLength = length;
        foreach (var (l2Offset, index, host) in scan.PastEnd)
        {
            if (host + ClusterSize <= limit) newLength = Math.Max(newLength, host + ClusterSize);
            else await RewriteL2EntryAsync(l2Offset, index, _header.Version >= 3 && !_extended ? Entry.ZeroFlag : 0,
                _extended ? Entry.AllZeroBitmap : 0, async, ct).ConfigureAwait(false);
        }
        await _l2Cache.WriteBackAsync(async, ct).ConfigureAwait(false);
        if (newLength > length) await Device.SetLengthCoreAsync(newLength, async, ct).ConfigureAwait(false);
        await Device.FlushCoreAsync(async, ct).ConfigureAwait(false);
    }

    /// <summary>Active L1 and L2 entries must carry COPIED exactly when the cluster's refcount is 1.</summary>
    private async ValueTask CheckCopiedFlagsAsync(ImageCheckResult r, CheckRepair repair, bool async, CancellationToken ct)
    {
        bool fix = repair.HasFlag(CheckRepair.Errors);
        var clusters = new List<long>((int)L2Entries);
        var slots = new List<long>((int)L2Entries);
        var refcounts = new ulong[L2Entries];
        for (int i = 0; i < _l1.Length; i++)
        {
            long l2Offset = _l1[i] & (long)Entry.L1OffsetMask;
            if (l2Offset == 0 || (l2Offset & (ClusterSize - 1)) != 0 || l2Offset >= Device.Length) continue;
            ulong rc = await _refcounts.GetAsync(l2Offset >> _clusterBits, async, ct).ConfigureAwait(false);
            bool copied = (_l1[i] & unchecked((long)Entry.Copied)) != 0;
            if ((rc == 1) != copied)
            {
                r.Messages.Add($"{(fix ? "Repairing" : "ERROR")} OFLAG_COPIED L2 cluster: l1_index={i} l1_entry={_l1[i]:x} refcount={rc}");
                if (fix)
                {
                    _l1[i] = rc == 1 ? _l1[i] | unchecked((long)Entry.Copied) : _l1[i] & ~unchecked((long)Entry.Copied);
                    _dirtyL1.Add(i);
                    r.CorruptionsFixed++;
                }
                else r.Corruptions++;
            }
            var l2 = await _l2Cache.GetAsync(l2Offset, async, ct).ConfigureAwait(false);
            clusters.Clear();
            slots.Clear();
            for (long j = NextUsedEntry(l2.Data, 0); j < L2Entries; j = NextUsedEntry(l2.Data, j + 1))
            {
                var e = ReadEntry(l2, j);
                if (e.Kind(_extended) is not (ClusterKind.Normal or ClusterKind.ZeroAllocated) || (e.HostOffset & (ClusterSize - 1)) != 0) continue;
                clusters.Add(e.HostOffset >> _clusterBits);
                slots.Add(j);
            }
            await _refcounts.GetManyAsync(clusters, refcounts, async, ct).ConfigureAwait(false);
            for (int k = 0; k < slots.Count; k++)
            {
                long j = slots[k];
                l2 = await _l2Cache.GetAsync(l2Offset, async, ct).ConfigureAwait(false);
                var e = ReadEntry(l2, j);
                ulong drc = refcounts[k];
                if ((drc == 1) == e.IsCopied) continue;
                r.Messages.Add($"{(fix ? "Repairing" : "ERROR")} OFLAG_COPIED data cluster: l2_entry={e.Raw:x} refcount={drc}");
                if (fix)
                {
                    l2 = await _l2Cache.GetAsync(l2Offset, async, ct).ConfigureAwait(false);
                    WriteEntry(l2, j, drc == 1 ? e.Raw | Entry.Copied : e.Raw & ~Entry.Copied, e.Bitmap);
                    r.CorruptionsFixed++;
                }
                else r.Corruptions++;
            }
        }
    }

    /// <summary>Clears the dirty and corrupt bits after a successful repair (QEMU's mark_clean and mark_consistent).</summary>
    private async ValueTask MarkConsistentAsync(bool async, CancellationToken ct)
    {
        var bits = IncompatibleFeatures.Dirty | IncompatibleFeatures.Corrupt;
        if ((_header.Incompatible & bits) == 0) return;
        // While the image is dirty, refcount blocks (the repaired ones too) may exist only in the cache; they must
        // be durable before the bit that excuses their absence goes.
        await _refcounts.WriteBackAsync(async, ct).ConfigureAwait(false);
        await Device.FlushCoreAsync(async, ct).ConfigureAwait(false);
        _header.Incompatible &= ~bits;
        _corrupt = false;
        var raw = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(raw, (ulong)_header.Incompatible);
        await Device.WriteCoreAsync(HeaderField.IncompatibleFeatures, raw, async, ct).ConfigureAwait(false);
        await Device.FlushCoreAsync(async, ct).ConfigureAwait(false);
    }
}
