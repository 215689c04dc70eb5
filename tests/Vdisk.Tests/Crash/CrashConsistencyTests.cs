using Vdisk.BlockIO;
using Xunit;
using Xunit.Abstractions;

namespace Vdisk.Tests.Crash;

/// <summary>
/// The crash-consistency campaign over <see cref="CrashMatrix"/>. VDISK_CRASH_STATES sets the total number of
/// states (default 1200, at least 1000 in CI).
/// </summary>
public class CrashConsistencyTests(ITestOutputHelper output)
{
    private const int CiStates = 1200;
    private const int StatesPerWorkload = 50;

    public static TheoryData<int, int, bool, CacheMode> Cells() => CrashMatrix.Cells();

    [Theory]
    [MemberData(nameof(Cells))]
    public void EveryCrashStateKeepsFlushedDataAndRepairsClean(int clusterSize, int refcountBits, bool lazy, CacheMode cache)
    {
        var cell = CrashMatrix.Cell(clusterSize, refcountBits, lazy, cache);
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
