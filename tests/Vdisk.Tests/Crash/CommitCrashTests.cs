using Vdisk.BlockIO;
using Xunit;
using Xunit.Abstractions;

namespace Vdisk.Tests.Crash;

/// <summary>
/// Commit as a step of the crash-consistency campaign: a chain whose two files crash at one instant, over
/// {4 KiB, 64 KiB clusters} x {lazy refcounts off, on} x {writeback, writethrough}. The campaign runs a quarter as
/// many states as VDISK_CRASH_STATES asks of the single-image one (default 1200: 300 here), each of them two files.
/// </summary>
public class CommitCrashTests(ITestOutputHelper output)
{
    private const int CiStates = 1200;
    private const int Share = 4;
    private const int StatesPerWorkload = 20;

    public static TheoryData<int, bool, CacheMode> Cells() => CrashMatrix.CommitCells();

    [Theory]
    [MemberData(nameof(Cells))]
    public void EveryCommitCrashStateKeepsTheChainReadingTheSameAndRepairsClean(int clusterSize, bool lazy, CacheMode cache)
    {
        var cell = CrashMatrix.CommitCell(clusterSize, lazy, cache);
        // The cells' workloads take the flavours in turn, from a different start in each cell.
        int cellNumber = CrashMatrix.CommitCellNumber(clusterSize, lazy, cache);
        int perCell = (CrashCampaign.TotalStates(CiStates) / Share + Cells().Count - 1) / Cells().Count;
        var counts = new CommitCounts();
        var campaign = new CommitCampaign();
        for (int k = 0; counts.States < perCell; k++)
        {
            var workload = CommitWorkload.Run(cell, 500 + k * 8 + cellNumber, CommitFlavour.Turn(k + cellNumber));
            campaign.Run(workload, Math.Min(StatesPerWorkload, perCell - counts.States), counts);
        }
        output.WriteLine(counts.Summary(cell.ToString()));
        foreach (var f in counts.Failures) output.WriteLine("  " + f);

        Assert.True(counts.FailureCount == 0, $"{counts.FailureCount} failures, first: {counts.Failures.FirstOrDefault()}");
        Assert.Equal(0, counts.ChainFlushed + counts.ChainUnflushed + counts.BaseFlushed + counts.BaseUnflushed);
        if (!lazy) Assert.Equal(0, counts.Top.CorruptDirty + counts.Base.CorruptDirty);
        Assert.True(counts.InsideCopy > 0, "some states should cut the copy short");
        Assert.True(counts.BaseCommitted > 0, "some states should come after the copy is durable");
    }

    /// <summary>
    /// Negative control: the top emptied durably over a base that lost the copy (what emptying the top before the
    /// base's flush could leave) must be caught, in the chain and in the base alone.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void OracleCatchesATopEmptiedOverABaseThatLostTheCopy(bool topClosedFirst)
    {
        var w = CommitWorkload.Run(CrashMatrix.CommitCell(4096, false, CacheMode.Writeback), seed: 3,
            new CommitFlavour(KeepTop: false, TopClosedFirst: topClosedFirst, GrowBase: false));
        long tick = w.ReopenedAt;
        int topCut = w.TopRecorder.RecordTimes.Count(t => t <= tick), baseCut = w.BaseRecorder.RecordTimes.Count(t => t <= w.Copy.Start);
        var state = new ChainCrashState(tick, new CrashState(topCut, topCut, CrashVariant.Everything, 0), new CrashState(baseCut, baseCut, CrashVariant.Everything, 0));
        var counts = new CommitCounts();
        new CommitCampaign().Evaluate(w, state, w.TopRecorder.BuildState(topCut), w.BaseRecorder.BuildState(baseCut), counts);
        output.WriteLine($"chain: {counts.ChainFlushed} flushed sectors wrong, base: {counts.BaseFlushed}; {counts.Failures.FirstOrDefault()}");

        Assert.Empty(w.LiveProblems);
        Assert.True(counts.TopEmptied == 1 && counts.BaseCommitted == 1);
        Assert.True(counts.ChainFlushed > 0, "the chain oracle should see the lost data");
        Assert.True(counts.BaseFlushed > 0, "the base oracle should see the lost copy");
    }
}
