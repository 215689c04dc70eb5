using System.Buffers.Binary;
using Vdisk.BlockIO;

namespace Vdisk.Tests.Crash;

/// <summary>
/// An independent reading of a qcow2 file's structure (standard 8-byte L2 entries), for the campaign's own oracles:
/// which host clusters hold metadata, and which are used twice. Refcounts count L1 trees, so a cluster reached from
/// the active tree and from a snapshot's is used once; a use twice is two mappings within one tree, a cluster that
/// is an L2 table in one tree and data in another, or either of those also holding other metadata.
/// </summary>
public sealed class QcowLayout
{
    private const ulong OffsetMask = 0x00FFFFFFFFFFFE00UL;
    private const ulong CompressedFlag = 1UL << 62;
    private const int SnapshotEntryFixed = 40;

    public int ClusterBits { get; private init; }
    /// <summary>L2 table offsets by L1 index (0 where there is none).</summary>
    public long[] L2Tables { get; private init; } = [];
    public long L1Offset { get; private init; }
    public long Size { get; private init; }
    public long RefcountTableOffset { get; private init; }
    public ulong IncompatibleFeatures { get; private init; }
    public int SnapshotCount { get; private set; }
    public HashSet<long> MetadataClusters { get; } = new();
    /// <summary>Uses per host cluster, from the header, the tables and the L2 entries, inside the file.</summary>
    public Dictionary<long, int> References { get; } = new();
    /// <summary>Data clusters the active tree maps: what the guest reads now.</summary>
    public HashSet<long> ActiveData { get; } = new();
    public bool Dirty => (IncompatibleFeatures & 1) != 0;

    public IEnumerable<long> ReferencedTwice => References.Where(kv => kv.Value > 1).Select(kv => kv.Key);

    public static QcowLayout Read(BlockDevice device)
    {
        var header = new byte[104];
        device.Read(0, header.AsMemory());
        int clusterBits = (int)BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(20));
        uint l1Size = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(36));
        long l1Offset = (long)BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(40));
        var activeL1 = ReadTable(device, l1Offset, (int)l1Size).Select(e => e & (long)OffsetMask).ToArray();
        var layout = new QcowLayout
        {
            ClusterBits = clusterBits,
            L1Offset = l1Offset,
            Size = (long)BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(24)),
            L2Tables = activeL1,
            RefcountTableOffset = (long)BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(48)),
            IncompatibleFeatures = BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(72)),
        };
        long cluster = 1L << clusterBits;
        long fileClusters = (device.GetLength() + cluster - 1) >> clusterBits;
        uint reftableClusters = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(56));

        layout.Add(0, cluster, fileClusters);
        layout.Add(l1Offset, l1Size * 8L, fileClusters);
        layout.Add(layout.RefcountTableOffset, reftableClusters * cluster, fileClusters);
        foreach (long block in ReadTable(device, layout.RefcountTableOffset, (int)(reftableClusters * cluster / 8)))
            if (block != 0)
            {
                layout.RefcountBlocks.Add(block);
                layout.Add(block, cluster, fileClusters);
            }
        var trees = new List<long[]> { activeL1 };
        trees.AddRange(layout.ReadSnapshots(device, header, fileClusters));

        // Per tree, a second mapping of the same cluster is a use twice; across trees, only a change of role is.
        var tables = new Dictionary<long, int>();
        var data = new Dictionary<long, int>();
        var l2 = new byte[cluster];
        foreach (var tree in trees)
        {
            var treeTables = new HashSet<long>();
            var treeData = new HashSet<long>();
            foreach (long l2Offset in tree)
            {
                if (l2Offset == 0) continue;
                layout.MetadataClusters.Add(l2Offset >> clusterBits);
                if (!treeTables.Add(l2Offset >> clusterBits)) Bump(tables, l2Offset >> clusterBits, 1);
                if (l2Offset + cluster > device.GetLength()) continue;
                device.Read(l2Offset, l2.AsMemory());
                for (int i = 0; i < cluster / 8; i++)
                {
                    ulong e = BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan(i * 8));
                    long host = (long)(e & OffsetMask);
                    if ((e & CompressedFlag) == 0 && host != 0 && !treeData.Add(host >> clusterBits)) Bump(data, host >> clusterBits, 1);
                }
            }
            if (tree == activeL1) layout.ActiveData.UnionWith(treeData);
            foreach (long c in treeTables) Bump(tables, c, 0);
            foreach (long c in treeData) Bump(data, c, 0);
        }
        foreach (var (c, extra) in tables.Concat(data))
            if (c < fileClusters) layout.References[c] = layout.References.GetValueOrDefault(c) + 1 + extra;
        return layout;

        // A cluster's entry is its extra uses beyond the first; seeing it at all makes the entry exist.
        static void Bump(Dictionary<long, int> uses, long c, int extra) => uses[c] = uses.GetValueOrDefault(c) + extra;
    }

    /// <summary>Adds the snapshot table and the snapshots' L1 tables; returns the trees those L1 tables root.</summary>
    private List<long[]> ReadSnapshots(BlockDevice device, byte[] header, long fileClusters)
    {
        var trees = new List<long[]>();
        uint count = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(60));
        long offset = (long)BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(64));
        long length = device.GetLength(), at = offset;
        var fixedPart = new byte[SnapshotEntryFixed];
        for (uint i = 0; i < Math.Min(count, 65536u) && at + SnapshotEntryFixed <= length; i++)
        {
            device.Read(at, fixedPart.AsMemory());
            long l1 = (long)BinaryPrimitives.ReadUInt64BigEndian(fixedPart);
            uint l1Size = BinaryPrimitives.ReadUInt32BigEndian(fixedPart.AsSpan(8));
            int idSize = BinaryPrimitives.ReadUInt16BigEndian(fixedPart.AsSpan(12));
            int nameSize = BinaryPrimitives.ReadUInt16BigEndian(fixedPart.AsSpan(14));
            uint extra = BinaryPrimitives.ReadUInt32BigEndian(fixedPart.AsSpan(36));
            at += (SnapshotEntryFixed + extra + idSize + nameSize + 7) & ~7L;
            if (l1 + l1Size * 8L > length) continue;
            Add(l1, l1Size * 8L, fileClusters);
            trees.Add(ReadTable(device, l1, (int)l1Size).Select(e => e & (long)OffsetMask).ToArray());
            SnapshotCount++;
        }
        if (count > 0) Add(offset, Math.Min(at, length) - offset, fileClusters);
        return trees;
    }

    private static IEnumerable<long> ReadTable(BlockDevice device, long offset, int entries)
    {
        var raw = new byte[entries * 8L];
        device.Read(offset, raw.AsMemory());
        for (int i = 0; i < entries; i++) yield return (long)(BinaryPrimitives.ReadUInt64BigEndian(raw.AsSpan(i * 8)) & ~0x1FFUL);
    }

    private void Add(long offset, long length, long fileClusters)
    {
        if (length <= 0) return;
        for (long c = offset >> ClusterBits; c <= (offset + length - 1) >> ClusterBits; c++)
        {
            MetadataClusters.Add(c);
            if (c >= fileClusters) continue;
            References[c] = References.GetValueOrDefault(c) + 1;
        }
    }

    /// <summary>The raw L2 entry that maps a guest offset (0 when its L2 table does not exist).</summary>
    public ulong L2Entry(BlockDevice device, long guestOffset)
    {
        int l2Bits = ClusterBits - 3;
        long l2 = L2Tables[guestOffset >> (ClusterBits + l2Bits)];
        if (l2 == 0) return 0;
        var raw = new byte[8];
        device.Read(l2 + ((guestOffset >> ClusterBits) & ((1L << l2Bits) - 1)) * 8, raw.AsMemory());
        return BinaryPrimitives.ReadUInt64BigEndian(raw);
    }

    /// <summary>Where the data of a guest offset's cluster lives (0 when unallocated).</summary>
    public long HostCluster(BlockDevice device, long guestOffset) => (long)(L2Entry(device, guestOffset) & OffsetMask);

    /// <summary>Offsets of the refcount blocks, in table order.</summary>
    public List<long> RefcountBlocks { get; } = new();

    /// <summary>True when a write lands on a cluster that is metadata here.</summary>
    public bool TouchesMetadata(long offset, long length)
    {
        for (long c = offset >> ClusterBits; c <= (offset + Math.Max(length, 1) - 1) >> ClusterBits; c++)
            if (MetadataClusters.Contains(c)) return true;
        return false;
    }
}
