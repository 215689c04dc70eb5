namespace Vdisk.Formats.Qcow2;

/// <summary>Kinds of qcow2 metadata, named as QEMU's overlap check names them in its messages.</summary>
internal enum MetadataKind
{
    None,
    Header,
    ActiveL1,
    ActiveL2,
    RefcountTable,
    RefcountBlock,
    SnapshotTable,
    InactiveL1,
}

/// <summary>
/// Knows where every piece of metadata lives, so that no write (data or metadata) lands on metadata of
/// another kind: QEMU's "Preventing invalid write on metadata". Single clusters (L2 tables, refcount blocks)
/// are kept in a dictionary for an O(1) test on the data path; contiguous tables are ranges.
/// </summary>
internal sealed class OverlapChecker
{
    private readonly int _clusterBits;
    private readonly Dictionary<long, MetadataKind> _clusters = new();
    private readonly List<(long Start, long End, MetadataKind Kind)> _ranges = new();

    public OverlapChecker(int clusterBits) => _clusterBits = clusterBits;

    public void SetRange(MetadataKind kind, long offset, long length)
    {
        _ranges.RemoveAll(r => r.Kind == kind);
        if (length > 0) _ranges.Add((offset, offset + length, kind));
    }

    /// <summary>Replaces every range of one kind (the snapshots' L1 tables are many ranges of one kind).</summary>
    public void SetRanges(MetadataKind kind, IEnumerable<(long Offset, long Length)> ranges)
    {
        _ranges.RemoveAll(r => r.Kind == kind);
        foreach (var (offset, length) in ranges)
            if (length > 0) _ranges.Add((offset, offset + length, kind));
    }

    public void AddCluster(long offset, MetadataKind kind) => _clusters[offset >> _clusterBits] = kind;
    public void RemoveCluster(long offset) => _clusters.Remove(offset >> _clusterBits);

    public static string Describe(MetadataKind kind) => kind switch
    {
        MetadataKind.Header => "qcow2_header",
        MetadataKind.ActiveL1 => "active L1 table",
        MetadataKind.ActiveL2 => "active L2 table",
        MetadataKind.RefcountTable => "refcount table",
        MetadataKind.RefcountBlock => "refcount block",
        MetadataKind.SnapshotTable => "snapshot table",
        MetadataKind.InactiveL1 => "inactive L1 table",
        _ => "metadata",
    };

    /// <summary>The kind of metadata [offset, offset+length) would overwrite, ignoring <paramref name="allowed"/>.</summary>
    public MetadataKind FindOverlap(long offset, long length, MetadataKind allowed)
    {
        if (length <= 0) return MetadataKind.None;
        // Whole clusters, as QEMU compares them: metadata owns the rest of its last cluster too (an L1 table of
        // one entry still owns its whole cluster, which nothing else may be written into).
        long first = offset >> _clusterBits, last = (offset + length - 1) >> _clusterBits;
        long start = first << _clusterBits, end = (last + 1) << _clusterBits;
        foreach (var (s, e, kind) in _ranges)
            if (kind != allowed && start < e && s < end) return kind;
        if (last - first > 1024)
        {
            foreach (var (cluster, kind) in _clusters)
                if (cluster >= first && cluster <= last && kind != allowed) return kind;
            return MetadataKind.None;
        }
        for (long c = first; c <= last; c++)
            if (_clusters.TryGetValue(c, out var kind) && kind != allowed) return kind;
        return MetadataKind.None;
    }
}
