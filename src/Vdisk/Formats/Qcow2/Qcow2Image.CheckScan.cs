using System.Buffers.Binary;
using Vdisk.Formats.Qcow2.Check;
using Vdisk.Formats.Qcow2.OnDisk;
using Vdisk.Images;

namespace Vdisk.Formats.Qcow2;

/// <summary>
/// The first half of a consistency check: count every reference to every host cluster, walking the header,
/// the active and the snapshots' L1/L2 tables, the snapshot table, the refcount table and its blocks
/// (QEMU's calculate_refcounts), noting what is malformed on the way.
/// </summary>
public sealed partial class Qcow2Image
{
    private sealed class CheckScan
    {
        public ReferenceCounts Counts { get; } = new();
        public long FileClusters { get; init; }
        public bool Rebuild { get; set; }
        /// <summary>Data clusters referenced past the end of the file: (L2 table offset, entry index, host offset).</summary>
        public List<(long L2Offset, long Index, long Host)> PastEnd { get; } = new();
        public List<long> OldRefcountStructure { get; } = new();
    }

    private async ValueTask<CheckScan> ScanReferencesAsync(ImageCheckResult r, CheckRepair repair, bool async, CancellationToken ct)
    {
        var scan = new CheckScan { FileClusters = (Device.Length + ClusterSize - 1) >> _clusterBits };
        Count(scan, r, 0, ClusterSize);
        await ScanL1Async(scan, r, repair, _header.L1TableOffset, _l1, active: true, async, ct).ConfigureAwait(false);
        var (snapshots, snapshotTableBytes) = await ReadSnapshotL1sAsync(r, async, ct).ConfigureAwait(false);
        Count(scan, r, _header.SnapshotsOffset, snapshotTableBytes);
        foreach (var (l1Offset, l1Size, _) in snapshots)
        {
            var raw = new byte[l1Size * 8L];
            await Device.ReadCoreAsync(l1Offset, raw, async, ct).ConfigureAwait(false);
            var l1 = new long[l1Size];
            for (int i = 0; i < l1.Length; i++) l1[i] = (long)BinaryPrimitives.ReadUInt64BigEndian(raw.AsSpan(i * 8));
            await ScanL1Async(scan, r, repair, l1Offset, l1, active: false, async, ct).ConfigureAwait(false);
        }
        Count(scan, r, _refcounts.TableOffset, (long)_refcounts.TableClusters << _clusterBits);
        scan.OldRefcountStructure.AddRange(Enumerable.Range(0, (int)_refcounts.TableClusters).Select(i => (_refcounts.TableOffset >> _clusterBits) + i));
        for (int i = 0; i < _refcounts.EntryCount; i++)
        {
            long block = _refcounts.BlockOffset(i);
            if (block == 0) continue;
            if (block >> _clusterBits >= scan.FileClusters)
            {
                r.Messages.Add($"ERROR refcount block {i} is outside image");
                r.Corruptions++;
                scan.Rebuild = true;
                continue;
            }
            Count(scan, r, block, ClusterSize);
            scan.OldRefcountStructure.Add(block >> _clusterBits);
            ulong refs = scan.Counts[block >> _clusterBits];
            if (refs != 1)
            {
                r.Messages.Add($"ERROR refcount block {i} refcount={refs}");
                r.Corruptions++;
                scan.Rebuild = true;
            }
        }
        return scan;
    }

    /// <summary>Adds one reference to every cluster of a host range (QEMU's inc_refcounts).</summary>
    private bool Count(CheckScan scan, ImageCheckResult r, long offset, long length)
    {
        if (length <= 0) return true;
        long first = offset >> _clusterBits, last = (offset + length - 1) >> _clusterBits;
        if (last >= scan.FileClusters)
        {
            r.Messages.Add($"ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x{offset:x} size 0x{length:x}");
            r.Corruptions++;
            return false;
        }
        for (long c = first; c <= last; c++)
        {
            ulong v = scan.Counts[c];
            if (v >= _refcounts.MaxRefcount)
            {
                r.Messages.Add($"ERROR: overflow cluster offset=0x{c << _clusterBits:x}");
                r.Messages.Add("Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing");
                r.Corruptions++;
                continue;
            }
            scan.Counts[c] = v + 1;
        }
        return true;
    }

    private async ValueTask ScanL1Async(CheckScan scan, ImageCheckResult r, CheckRepair repair, long l1Offset, long[] l1, bool active, bool async, CancellationToken ct)
    {
        Count(scan, r, l1Offset, l1.Length * 8L);
        long nextContiguous = 0;
        var table = new byte[ClusterSize];
        for (int i = 0; i < l1.Length; i++)
        {
            long l2Offset = l1[i] & (long)Entry.L1OffsetMask;
            if (l2Offset == 0) continue;
            if ((l2Offset & (ClusterSize - 1)) != 0)
            {
                r.Messages.Add($"ERROR l2_offset={l2Offset:x}: Table is not cluster aligned; L1 entry corrupted");
                r.Corruptions++;
                continue;
            }
            if (!Count(scan, r, l2Offset, ClusterSize)) continue;
            await Device.ReadCoreAsync(l2Offset, table, async, ct).ConfigureAwait(false);
            for (long j = NextUsedEntry(table, 0); j < L2Entries; j = NextUsedEntry(table, j + 1))
            {
                var span = table.AsSpan((int)(j * _header.L2EntrySize));
                var e = new L2Entry(BinaryPrimitives.ReadUInt64BigEndian(span), _extended ? BinaryPrimitives.ReadUInt64BigEndian(span[8..]) : 0);
                nextContiguous = await ScanL2EntryAsync(scan, r, repair, l2Offset, j, e, active, nextContiguous, async, ct).ConfigureAwait(false);
            }
        }
    }

    private async ValueTask<long> ScanL2EntryAsync(CheckScan scan, ImageCheckResult r, CheckRepair repair, long l2Offset, long index,
        L2Entry e, bool active, long nextContiguous, bool async, CancellationToken ct)
    {
        var kind = e.Kind(_extended);
        if (_extended && kind != ClusterKind.Compressed && (e.Bitmap >> 32 & e.Bitmap) != 0
            || _extended && kind == ClusterKind.Unallocated && (e.Bitmap & Entry.AllAllocatedBitmap) != 0)
        {
            r.Messages.Add($"ERROR: Invalid cluster entry 0x{e.Raw:x} with subcluster bitmap 0x{e.Bitmap:x}");
            r.Corruptions++;
        }
        switch (kind)
        {
            case ClusterKind.Compressed:
                if (e.IsCopied)
                {
                    bool fix = repair.HasFlag(CheckRepair.Errors) && active;
                    r.Messages.Add($"{(fix ? "Repairing" : "ERROR")}: coffset=0x{e.CompressedExtent(_clusterBits).Offset:x}: copied flag must never be set for compressed clusters");
                    if (fix)
                    {
                        await RewriteL2EntryAsync(l2Offset, index, e.Raw & ~Entry.Copied, e.Bitmap, async, ct).ConfigureAwait(false);
                        r.CorruptionsFixed++;
                    }
                    else r.Corruptions++;
                }
                var (offset, sectors) = e.CompressedExtent(_clusterBits);
                long start = offset & ~511L;
                Count(scan, r, start, sectors * 512L);
                if (active) { r.AllocatedClusters++; r.CompressedClusters++; }
                return nextContiguous;
            case ClusterKind.Normal:
            case ClusterKind.ZeroAllocated:
                long host = e.HostOffset;
                if ((host & (ClusterSize - 1)) != 0)
                {
                    bool fix = repair.HasFlag(CheckRepair.Errors) && kind == ClusterKind.ZeroAllocated && active;
                    r.Messages.Add($"{(fix ? "Repairing" : "ERROR")} offset={host:x}: {(fix ? "Preallocated zero cluster is not properly aligned; L2 entry corrupted" : "Data cluster is not properly aligned; L2 entry corrupted")}");
                    if (fix)
                    {
                        await RewriteL2EntryAsync(l2Offset, index, Entry.ZeroFlag, 0, async, ct).ConfigureAwait(false);
                        r.CorruptionsFixed++;
                    }
                    else r.Corruptions++;
                    return nextContiguous;
                }
                if (active)
                {
                    r.AllocatedClusters++;
                    if (nextContiguous != 0 && host != nextContiguous) r.FragmentedClusters++;
                    nextContiguous = host + ClusterSize;
                }
                if (!Count(scan, r, host, ClusterSize)) scan.PastEnd.Add((l2Offset, index, host));
                return nextContiguous;
            default:
                return nextContiguous;
        }
    }

    private async ValueTask RewriteL2EntryAsync(long l2Offset, long index, ulong raw, ulong bitmap, bool async, CancellationToken ct)
    {
        var l2 = await _l2Cache.GetAsync(l2Offset, async, ct).ConfigureAwait(false);
        WriteEntry(l2, index, raw, bitmap);
    }

    /// <summary>The snapshots' L1 tables, read from the snapshot table with every size checked before use.</summary>
    private async ValueTask<(List<(long Offset, int Size, string Name)> L1s, long TableBytes)> ReadSnapshotL1sAsync(ImageCheckResult r, bool async, CancellationToken ct)
    {
        var result = new List<(long, int, string)>();
        if (_header.SnapshotCount == 0) return (result, 0);
        long tableSize = 0;
        var header = new byte[40];
        for (uint i = 0; i < _header.SnapshotCount; i++)
        {
            long at = _header.SnapshotsOffset + tableSize;
            if (tableSize > Qcow2Header.MaxSnapshotTableBytes || at + 40 > Device.Length)
            {
                r.Messages.Add($"ERROR snapshot table is too large or truncated (snapshot {i})");
                r.Corruptions++;
                break;
            }
            await Device.ReadCoreAsync(at, header, async, ct).ConfigureAwait(false);
            long l1Offset = (long)BinaryPrimitives.ReadUInt64BigEndian(header);
            uint l1Size = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(8));
            int idLength = BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(12));
            int nameLength = BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(14));
            uint extra = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(36));
            tableSize += (40 + extra + idLength + nameLength + 7) & ~7L;
            if (l1Size > Qcow2Header.MaxL1Bytes / 8 || (l1Offset & (ClusterSize - 1)) != 0 || l1Offset + l1Size * 8L > Device.Length)
            {
                r.Messages.Add($"ERROR snapshot {i} has an invalid L1 table (offset 0x{l1Offset:x}, {l1Size} entries)");
                r.Corruptions++;
                continue;
            }
            result.Add((l1Offset, (int)l1Size, i.ToString()));
        }
        return (result, tableSize);
    }
}
