using Vdisk.BlockIO;
using Xunit;
using Xunit.Abstractions;

namespace Vdisk.Tests.Crash;

/// <summary>
/// The crash-consistency campaign: {4 KiB, 64 KiB clusters} x {lazy refcounts off, on} x {writeback, writethrough},
/// plus 512-byte clusters with 64-bit refcounts, where a few MiB of data make the refcount table grow (relocate)
/// several times. VDISK_CRASH_STATES sets the total number of states (default 1200, at least 1000 in CI).
/// </summary>
public class CrashConsistencyTests(ITestOutputHelper output)
{
    private const int CiStates = 1200;
    private const int StatesPerWorkload = 50;

    public static TheoryData<int, int, bool, CacheMode> Cells()
    {
        var data = new TheoryData<int, int, bool, CacheMode>();
        foreach (var (cluster, bits) in new[] { (4096, 16), (65536, 16), (512, 64) })
            foreach (bool lazy in new[] { false, true })
                foreach (var cache in new[] { CacheMode.Writeback, CacheMode.Writethrough })
                    data.Add(cluster, bits, lazy, cache);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cells))]
    public void EveryCrashStateKeepsFlushedDataAndRepairsClean(int clusterSize, int refcountBits, bool lazy, CacheMode cache)
    {
        // 512-byte clusters need a few MiB of data for the refcount table to outgrow its first cluster (2 MiB).
        var cell = new CrashCell(clusterSize, lazy, cache, refcountBits, Operations: clusterSize == 512 ? 200 : 110);
        int perCell = (CrashCampaign.TotalStates(CiStates) + Cells().Count - 1) / Cells().Count;
        var counts = new CampaignCounts();
        var campaign = new CrashCampaign();
        for (int seed = 1; counts.States < perCell; seed++)
        {
            var workload = CrashWorkload.Run(cell, seed + clusterSize + (lazy ? 1000 : 0) + (int)cache * 100);
            campaign.Run(workload, Math.Min(StatesPerWorkload, perCell - counts.States), counts);
        }
        output.WriteLine(counts.Summary(cell.ToString()));
        foreach (var f in counts.Failures) output.WriteLine("  " + f);

        Assert.True(counts.FailureCount == 0, $"{counts.FailureCount} failures, first: {counts.Failures.FirstOrDefault()}");
        Assert.Equal(0, counts.FlushedMismatches);
        Assert.Equal(0, counts.UnflushedMismatches);
        if (!lazy) Assert.Equal(0, counts.CorruptDirty);
        if (clusterSize == 512) Assert.True(counts.RefcountGrowths == counts.Workloads, "every 512-byte-cluster workload should grow the refcount table");
    }
}
