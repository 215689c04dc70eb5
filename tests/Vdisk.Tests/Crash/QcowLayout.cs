using System.Buffers.Binary;
using Vdisk.BlockIO;

namespace Vdisk.Tests.Crash;

/// <summary>
/// An independent reading of a qcow2 file's structure (standard 8-byte L2 entries, no snapshots), for the campaign's
/// own oracles: which host clusters hold metadata, and how many times each host cluster is referenced.
/// </summary>
public sealed class QcowLayout
{
    private const ulong OffsetMask = 0x00FFFFFFFFFFFE00UL;
    private const ulong CompressedFlag = 1UL << 62;

    public int ClusterBits { get; private init; }
    /// <summary>L2 table offsets by L1 index (0 where there is none).</summary>
    public long[] L2Tables { get; private init; } = [];
    public long L1Offset { get; private init; }
    public long RefcountTableOffset { get; private init; }
    public ulong IncompatibleFeatures { get; private init; }
    public HashSet<long> MetadataClusters { get; } = new();
    /// <summary>References per host cluster, from the header, the tables and the L2 entries, inside the file.</summary>
    public Dictionary<long, int> References { get; } = new();
    public bool Dirty => (IncompatibleFeatures & 1) != 0;

    public IEnumerable<long> ReferencedTwice => References.Where(kv => kv.Value > 1).Select(kv => kv.Key);

    public static QcowLayout Read(BlockDevice device)
    {
        var header = new byte[104];
        device.Read(0, header.AsMemory());
        int clusterBits = (int)BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(20));
        uint l1Size = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(36));
        long l1Offset = (long)BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(40));
        var layout = new QcowLayout
        {
            ClusterBits = clusterBits,
            L1Offset = l1Offset,
            L2Tables = ReadTable(device, l1Offset, (int)l1Size).Select(e => e & (long)OffsetMask).ToArray(),
            RefcountTableOffset = (long)BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(48)),
            IncompatibleFeatures = BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(72)),
        };
        long cluster = 1L << clusterBits;
        long fileClusters = (device.GetLength() + cluster - 1) >> clusterBits;
        uint reftableClusters = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(56));

        layout.Add(0, cluster, metadata: true, fileClusters);
        layout.Add(l1Offset, l1Size * 8L, metadata: true, fileClusters);
        layout.Add(layout.RefcountTableOffset, reftableClusters * cluster, metadata: true, fileClusters);
        foreach (long block in ReadTable(device, layout.RefcountTableOffset, (int)(reftableClusters * cluster / 8)))
            if (block != 0)
            {
                layout.RefcountBlocks.Add(block);
                layout.Add(block, cluster, metadata: true, fileClusters);
            }
        var l2 = new byte[cluster];
        foreach (long l2Offset in layout.L2Tables)
        {
            if (l2Offset == 0) continue;
            layout.Add(l2Offset, cluster, metadata: true, fileClusters);
            device.Read(l2Offset, l2.AsMemory());
            for (int i = 0; i < cluster / 8; i++)
            {
                ulong e = BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan(i * 8));
                long host = (long)(e & OffsetMask);
                if ((e & CompressedFlag) == 0 && host != 0) layout.Add(host, cluster, metadata: false, fileClusters);
            }
        }
        return layout;
    }

    private static IEnumerable<long> ReadTable(BlockDevice device, long offset, int entries)
    {
        var raw = new byte[entries * 8L];
        device.Read(offset, raw.AsMemory());
        for (int i = 0; i < entries; i++) yield return (long)(BinaryPrimitives.ReadUInt64BigEndian(raw.AsSpan(i * 8)) & ~0x1FFUL);
    }

    private void Add(long offset, long length, bool metadata, long fileClusters)
    {
        if (length <= 0) return;
        for (long c = offset >> ClusterBits; c <= (offset + length - 1) >> ClusterBits; c++)
        {
            if (metadata) MetadataClusters.Add(c);
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
