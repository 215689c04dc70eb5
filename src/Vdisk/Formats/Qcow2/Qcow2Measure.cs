namespace Vdisk.Formats.Qcow2;

/// <summary>
/// How large a qcow2 file gets (qemu-img measure): the metadata a fully allocated image of a virtual size needs
/// (header cluster, L2 tables for every cluster, an L1 table rounded to whole clusters, refcount blocks and table
/// for all of that including themselves), plus the data clusters actually stored.
/// </summary>
public static class Qcow2Measure
{
    /// <param name="virtualSize">Guest size in bytes (qemu rounds it up to 512 first).</param>
    /// <param name="dataClusters">Clusters holding data; ignored when the options preallocate everything.</param>
    /// <returns>The size needed for <paramref name="dataClusters"/> of data, and for a fully allocated image.</returns>
    public static (long Required, long FullyAllocated) Compute(Qcow2CreateOptions options, long virtualSize, long dataClusters)
    {
        long cluster = options.ClusterSize;
        long l2Tables = DivUp(virtualSize / cluster, cluster / (options.ExtendedL2 ? 16 : 8));
        if (l2Tables * 8 > OnDisk.Qcow2Header.MaxL1Bytes)
            throw new Images.DiskImageException(Images.DiskImageErrorKind.InvalidArgument, null, "The image size is too large (try using a larger cluster size)");
        long alignedSize = RoundUp(virtualSize, cluster);
        long fully = MetadataBytes(alignedSize, cluster, options.RefcountBits, options.ExtendedL2) + alignedSize;
        long data = options.Preallocation is "full" or "falloc" ? alignedSize : dataClusters * cluster;
        // Metadata is always counted in full, even for the clusters that stay empty: an overestimate, as QEMU's.
        return (fully - alignedSize + data, fully);
    }

    private static long MetadataBytes(long alignedSize, long cluster, int refcountBits, bool extendedL2)
    {
        long entrySize = extendedL2 ? 16 : 8;
        long header = cluster;
        // L2 tables: one entry per cluster, whole tables.
        long l2Entries = RoundUp(alignedSize / cluster, cluster / entrySize);
        long l2Bytes = l2Entries * entrySize;
        // L1: one 8-byte entry per L2 table, whole clusters.
        long l1Entries = RoundUp(l2Bytes / cluster, cluster / 8);
        long l1Bytes = l1Entries * 8;
        long covered = (header + l2Bytes + l1Bytes + alignedSize) / cluster;
        return header + l2Bytes + l1Bytes + RefcountBytes(covered, cluster, refcountBits);
    }

    /// <summary>Refcount blocks and table clusters for <paramref name="clusters"/> clusters plus themselves: a fixed point.</summary>
    private static long RefcountBytes(long clusters, long cluster, int refcountBits)
    {
        long perBlock = cluster * 8 / refcountBits;
        long perTableCluster = cluster / 8;
        long blocks = 0, table = 0;
        while (true)
        {
            long newBlocks = DivUp(clusters + blocks + table, perBlock);
            long newTable = DivUp(newBlocks, perTableCluster);
            if (newBlocks == blocks && newTable == table) break;
            (blocks, table) = (newBlocks, newTable);
        }
        return (blocks + table) * cluster;
    }

    private static long DivUp(long a, long b) => (a + b - 1) / b;
    private static long RoundUp(long a, long b) => DivUp(a, b) * b;
}
