using System.Buffers.Binary;
using Vdisk.Formats.Qcow2.OnDisk;
using Vdisk.Images;

namespace Vdisk.Formats.Qcow2;

/// <summary>A run of guest bytes that one kind of mapping covers: where they live and how to read them.</summary>
internal readonly record struct Mapping(ClusterKind Kind, long HostOffset, long Length, ulong RawEntry);

/// <summary>Guest-to-host translation through the L1 table and cached L2 tables.</summary>
public sealed partial class Qcow2Image
{
    private int SubclusterBits => _extended ? _clusterBits - 5 : _clusterBits;
    private long L2Entries => 1L << _l2Bits;

    /// <summary>The L2 table for an L1 index, or null if the L1 entry is empty. Caller holds the lock.</summary>
    private async ValueTask<CachedTable?> GetL2TableAsync(long l1Index, bool async, CancellationToken ct)
    {
        // Past the L1 table (VM state not yet written) nothing is allocated.
        if (l1Index >= _l1.Length) return null;
        long l2Offset = _l1[l1Index] & (long)Entry.L1OffsetMask;
        if (l2Offset == 0) return null;
        if ((l2Offset & (ClusterSize - 1)) != 0)
            throw SignalCorruption($"L2 table offset 0x{l2Offset:x} unaligned (L1 index: 0x{l1Index:x})", l2Offset);
        return await _l2Cache.GetAsync(l2Offset, async, ct).ConfigureAwait(false);
    }

    private L2Entry ReadEntry(CachedTable l2, long index)
    {
        var span = l2.Data.AsSpan((int)(index * _header.L2EntrySize));
        return new L2Entry(BinaryPrimitives.ReadUInt64BigEndian(span), _extended ? BinaryPrimitives.ReadUInt64BigEndian(span[8..]) : 0);
    }

    /// <summary>
    /// The first entry at or after <paramref name="from"/> with any bit set, or <c>L2Entries</c>: scans of whole
    /// tables skip the all-zero (unallocated) entries that make up most of a sparse table with a vectorised search.
    /// </summary>
    private long NextUsedEntry(byte[] table, long from)
    {
        int size = _header.L2EntrySize;
        int at = (int)(from * size);
        if (at >= ClusterSize) return L2Entries;
        int found = table.AsSpan(at, ClusterSize - at).IndexOfAnyExcept((byte)0);
        return found < 0 ? L2Entries : from + found / size;
    }

    private void WriteEntry(CachedTable l2, long index, ulong raw, ulong bitmap)
    {
        int at = (int)(index * _header.L2EntrySize);
        var span = l2.Data.AsSpan(at);
        BinaryPrimitives.WriteUInt64BigEndian(span, raw);
        if (_extended) BinaryPrimitives.WriteUInt64BigEndian(span[8..], bitmap);
        _l2Cache.MarkDirty(l2, at, _header.L2EntrySize);
    }

    /// <summary>The L2 entry of a guest cluster (empty if its L2 table does not exist). Caller holds the lock.</summary>
    private async ValueTask<L2Entry> LookupAsync(long guestCluster, bool async, CancellationToken ct)
    {
        var l2 = await GetL2TableAsync(guestCluster >> _l2Bits, async, ct).ConfigureAwait(false);
        return l2 is null ? default : ReadEntry(l2, guestCluster & (L2Entries - 1));
    }

    /// <summary>
    /// Maps [offset, offset+maxLength) as far as one kind of mapping continues, within one L2 table and with
    /// contiguous host offsets for data. Caller holds the lock.
    /// </summary>
    private async ValueTask<Mapping> MapAsync(long offset, long maxLength, bool async, CancellationToken ct)
    {
        long guestCluster = offset >> _clusterBits;
        long l1Index = guestCluster >> _l2Bits;
        long tableEnd = (l1Index + 1) << (_l2Bits + _clusterBits);
        long limit = Math.Min(offset + maxLength, tableEnd);
        var l2 = await GetL2TableAsync(l1Index, async, ct).ConfigureAwait(false);
        if (l2 is null) return new Mapping(ClusterKind.Unallocated, -1, limit - offset, 0);

        int subBits = SubclusterBits;
        var first = Classify(l2, offset, out long firstHost, out ulong firstRaw);
        if (first == ClusterKind.Compressed)
            return new Mapping(first, 0, Math.Min(limit, ((offset >> _clusterBits) + 1) << _clusterBits) - offset, firstRaw);
        long pos = ((offset >> subBits) + 1) << subBits;
        while (pos < limit)
        {
            var kind = Classify(l2, pos, out long host, out _);
            if (kind != first) break;
            // One mapping has one host offset (or none) that continues through it, as qemu-img map reports runs.
            if ((host >= 0) != (firstHost >= 0) || (host >= 0 && host != firstHost + (pos - offset))) break;
            pos += 1L << subBits;
        }
        return new Mapping(first, firstHost, Math.Min(pos, limit) - offset, firstRaw);
    }

    private ClusterKind Classify(CachedTable l2, long offset, out long host, out ulong raw)
    {
        long guestCluster = offset >> _clusterBits;
        var entry = ReadEntry(l2, guestCluster & (L2Entries - 1));
        raw = entry.Raw;
        int sub = _extended ? (int)((offset >> SubclusterBits) & 31) : 0;
        var kind = entry.SubclusterKind(_extended, sub);
        host = -1;
        if (_extended && (entry.Bitmap >> 32 & entry.Bitmap) != 0)
            throw SignalCorruption($"Invalid subcluster bitmap 0x{entry.Bitmap:x} for cluster {guestCluster}", offset);
        // An unallocated subcluster of a cluster that has a host cluster (preallocated with extended L2 entries)
        // still has its host offset, which block status reports as QEMU's does.
        if (kind is ClusterKind.Normal or ClusterKind.ZeroAllocated || (kind == ClusterKind.Unallocated && entry.Kind(_extended) == ClusterKind.Normal))
        {
            if ((entry.HostOffset & (ClusterSize - 1)) != 0)
                throw SignalCorruption($"Cluster allocation offset 0x{entry.Raw & Entry.L2OffsetMask:x} unaligned (L2 entry 0x{entry.Raw:x})", offset);
            host = entry.HostOffset + (offset & (ClusterSize - 1));
        }
        return kind;
    }

    protected override async ValueTask<LayerStatus> GetLayerStatusCoreAsync(long offset, long length, bool async, CancellationToken ct)
    {
        Mapping m;
        bool preallocated;
        await LockAsync(async, ct).ConfigureAwait(false);
        try
        {
            m = await MapAsync(offset, length, async, ct).ConfigureAwait(false);
            preallocated = m.Kind == ClusterKind.Normal && await IsMetadataPreallocatedAsync(async, ct).ConfigureAwait(false);
        }
        finally { Unlock(); }
        long len = Math.Min(m.Length, length);
        if (preallocated)
        {
            // As QEMU, ask the file too: data over a hole (a preallocated cluster) is known to read as zeros.
            var extent = await Device.GetExtentCoreAsync(m.HostOffset, len, async, ct).ConfigureAwait(false);
            return new LayerStatus(offset, Math.Min(len, extent.Length), LayerAllocation.Data, m.HostOffset, ReadsZero: !extent.IsData);
        }
        return m.Kind switch
        {
            ClusterKind.Normal => new LayerStatus(offset, len, LayerAllocation.Data, m.HostOffset),
            ClusterKind.Compressed => new LayerStatus(offset, len, LayerAllocation.Data, -1, Compressed: true),
            ClusterKind.ZeroPlain => new LayerStatus(offset, len, LayerAllocation.Zero),
            ClusterKind.ZeroAllocated => new LayerStatus(offset, len, LayerAllocation.Zero, m.HostOffset),
            _ => new LayerStatus(offset, len, LayerAllocation.Unallocated, m.HostOffset),
        };
    }

    private bool? _metadataPreallocated;

    /// <summary>
    /// Whether clearly more clusters are in use than the file has allocated (preallocation=metadata), decided
    /// once per open as QEMU does; only then does block status consult the file's holes for data clusters.
    /// Caller holds the lock.
    /// </summary>
    private async ValueTask<bool> IsMetadataPreallocatedAsync(bool async, CancellationToken ct)
    {
        if (_metadataPreallocated is { } known) return known;
        long realClusters = Device.GetAllocatedSize() / ClusterSize;
        long threshold = Math.Max(realClusters * 10 / 9, realClusters + 2);
        long endCluster = (Device.Length + ClusterSize - 1) >> _clusterBits;
        long inUse = 0;
        for (long c = 0; c < endCluster && inUse < threshold; c++)
            if (await _refcounts.GetAsync(c, async, ct).ConfigureAwait(false) != 0) inUse++;
        _metadataPreallocated = inUse >= threshold;
        return _metadataPreallocated.Value;
    }

    /// <summary>Marks the image corrupt (on disk, when writable) and returns the exception to throw: QEMU's qcow2_signal_corruption.</summary>
    private CorruptImageException SignalCorruption(string problem, long offset)
    {
        if (!IsReadOnly && !_corrupt)
        {
            _corrupt = true;
            try
            {
                _header.Incompatible |= IncompatibleFeatures.Corrupt;
                if (_header.Version >= 3)
                {
                    var raw = new byte[8];
                    BinaryPrimitives.WriteUInt64BigEndian(raw, (ulong)_header.Incompatible);
                    Device.Write(HeaderField.IncompatibleFeatures, raw.AsMemory());
                    Device.Flush();
                }
            }
            catch (IOException) { /* the original problem is what the caller needs to hear about */ }
            return new CorruptImageException(Path, "Marking image as corrupt: " + problem + "; further corruption events will be suppressed", offset);
        }
        return new CorruptImageException(Path, problem, offset);
    }
}
