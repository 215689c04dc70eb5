using Vdisk.BlockIO;
using Xunit;

namespace Vdisk.Tests.Crash;

/// <summary>
/// The campaign's matrix: {4 KiB, 64 KiB clusters} x {lazy refcounts off, on} x {writeback, writethrough}, plus
/// 512-byte clusters with 64-bit refcounts, where a few MiB of data make the refcount table grow (relocate).
/// The commit campaign runs the first part of it.
/// </summary>
public static class CrashMatrix
{
    public static TheoryData<int, int, bool, CacheMode> Cells()
    {
        var data = new TheoryData<int, int, bool, CacheMode>();
        foreach (var (cluster, bits) in new[] { (4096, 16), (65536, 16), (512, 64) })
            foreach (bool lazy in new[] { false, true })
                foreach (var cache in new[] { CacheMode.Writeback, CacheMode.Writethrough })
                    data.Add(cluster, bits, lazy, cache);
        return data;
    }

    /// <summary>512-byte clusters need more operations for the refcount table to outgrow its first cluster (2 MiB).</summary>
    public static CrashCell Cell(int clusterSize, int refcountBits, bool lazy, CacheMode cache) =>
        new(clusterSize, lazy, cache, refcountBits, Operations: clusterSize == 512 ? 200 : 110);

    /// <summary>The commit campaign's cells: {4 KiB, 64 KiB clusters} x {lazy refcounts off, on} x {writeback, writethrough}.</summary>
    public static TheoryData<int, bool, CacheMode> CommitCells()
    {
        var data = new TheoryData<int, bool, CacheMode>();
        foreach (int cluster in new[] { 4096, 65536 })
            foreach (bool lazy in new[] { false, true })
                foreach (var cache in new[] { CacheMode.Writeback, CacheMode.Writethrough })
                    data.Add(cluster, lazy, cache);
        return data;
    }

    /// <summary>A commit workload's chain is two files of 8 MiB; 80 operations in all.</summary>
    public static CrashCell CommitCell(int clusterSize, bool lazy, CacheMode cache) =>
        new(clusterSize, lazy, cache, DiskSize: 8 << 20, Operations: 80);

    /// <summary>The cell's place in <see cref="CommitCells"/>, 0 to 7.</summary>
    public static int CommitCellNumber(int clusterSize, bool lazy, CacheMode cache) =>
        (clusterSize == 65536 ? 4 : 0) + (lazy ? 2 : 0) + (cache == CacheMode.Writethrough ? 1 : 0);
}
