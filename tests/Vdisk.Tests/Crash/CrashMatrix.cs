using Vdisk.BlockIO;
using Xunit;

namespace Vdisk.Tests.Crash;

/// <summary>
/// The campaign's matrix: {4 KiB, 64 KiB clusters} x {lazy refcounts off, on} x {writeback, writethrough}, plus
/// 512-byte clusters with 64-bit refcounts, where a few MiB of data make the refcount table grow (relocate).
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
}
