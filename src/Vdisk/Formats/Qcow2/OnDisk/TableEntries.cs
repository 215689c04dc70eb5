namespace Vdisk.Formats.Qcow2.OnDisk;

/// <summary>Bit layout of L1 entries, L2 entries and extended-L2 subcluster bitmaps (qcow2 spec, "Cluster mapping").</summary>
public static class Entry
{
    public const ulong Copied = 1UL << 63;
    public const ulong Compressed = 1UL << 62;
    public const ulong ZeroFlag = 1UL;
    public const ulong L1OffsetMask = 0x00FFFFFFFFFFFE00UL;
    public const ulong L1ReservedMask = 0x7F000000000001FFUL;
    public const ulong L2OffsetMask = 0x00FFFFFFFFFFFE00UL;
    public const ulong L2StandardReservedMask = 0x3F000000000001FEUL;
    public const ulong ReftableOffsetMask = 0xFFFFFFFFFFFFFE00UL;

    /// <summary>Subcluster bitmap with every subcluster reading as zeros.</summary>
    public const ulong AllZeroBitmap = 0xFFFFFFFF00000000UL;
    public const ulong AllAllocatedBitmap = 0x00000000FFFFFFFFUL;

    public static ulong SubclusterAllocated(int index) => 1UL << index;
    public static ulong SubclusterZero(int index) => 1UL << (index + 32);
}

/// <summary>What an L2 entry (or one subcluster of it) means, as QEMU classifies it.</summary>
public enum ClusterKind
{
    Unallocated,
    /// <summary>Reads as zeros; no host cluster.</summary>
    ZeroPlain,
    /// <summary>Reads as zeros; a host cluster stays preallocated.</summary>
    ZeroAllocated,
    Normal,
    Compressed,
}

/// <summary>Decoding of one L2 entry for a given cluster size.</summary>
public readonly struct L2Entry
{
    public L2Entry(ulong raw, ulong bitmap = 0)
    {
        Raw = raw;
        Bitmap = bitmap;
    }

    public ulong Raw { get; }
    /// <summary>Subcluster bitmap of an extended entry (0 otherwise).</summary>
    public ulong Bitmap { get; }

    public bool IsCompressed => (Raw & Entry.Compressed) != 0;
    public bool IsCopied => (Raw & Entry.Copied) != 0;
    public long HostOffset => (long)(Raw & Entry.L2OffsetMask);

    /// <summary>The cluster's kind, ignoring subclusters (QEMU's qcow2_get_cluster_type).</summary>
    public ClusterKind Kind(bool extended)
    {
        if (IsCompressed) return ClusterKind.Compressed;
        if (!extended && (Raw & Entry.ZeroFlag) != 0) return HostOffset != 0 ? ClusterKind.ZeroAllocated : ClusterKind.ZeroPlain;
        return HostOffset != 0 ? ClusterKind.Normal : ClusterKind.Unallocated;
    }

    /// <summary>The kind of one subcluster of an extended entry; a non-extended entry has one subcluster.</summary>
    public ClusterKind SubclusterKind(bool extended, int index)
    {
        var kind = Kind(extended);
        if (!extended || kind == ClusterKind.Compressed) return kind;
        if ((Bitmap & Entry.SubclusterZero(index)) != 0) return kind == ClusterKind.Normal ? ClusterKind.ZeroAllocated : ClusterKind.ZeroPlain;
        if ((Bitmap & Entry.SubclusterAllocated(index)) != 0) return kind == ClusterKind.Normal ? ClusterKind.Normal : ClusterKind.Unallocated;
        return ClusterKind.Unallocated;
    }

    /// <summary>Compressed descriptor: byte offset of the data and its length in whole 512-byte sectors.</summary>
    public (long Offset, int Sectors) CompressedExtent(int clusterBits)
    {
        int shift = 62 - (clusterBits - 8);
        ulong offsetMask = (1UL << shift) - 1;
        ulong sectorMask = (1UL << (clusterBits - 8)) - 1;
        return ((long)(Raw & offsetMask), (int)((Raw >> shift) & sectorMask) + 1);
    }

    public static ulong MakeCompressed(long offset, int sectors, int clusterBits)
    {
        int shift = 62 - (clusterBits - 8);
        return Entry.Compressed | ((ulong)(sectors - 1) << shift) | (ulong)offset;
    }
}
