using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;
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
        // Shrinks and applies can leave a workload using less than the first refcount table covers.
        if (clusterSize == 512) Assert.True(counts.RefcountGrowths > 0, "some 512-byte-cluster workload should grow the refcount table");
    }

    /// <summary>Negative control: a crash state that loses one flushed data write must be caught by the data oracle.</summary>
    [Fact]
    public void OracleCatchesALostFlushedWrite()
    {
        var w = CrashWorkload.Run(new CrashCell(4096, false, CacheMode.Writeback), seed: 7);
        var records = w.Records;
        int caught = 0, tried = 0;
        // Guest flushes: what came before them is durable, and the model holds the guest to it.
        foreach (int flush in w.Ops.Where(o => o.Kind == OpKind.Flush).Select(o => o.LastFlushRecord).Skip(2).Take(10))
        {
            using var prefix = w.Recorder.BuildState(flush + 1);
            var layout = QcowLayout.Read(prefix);
            // The last data write before the flush, to a cluster still mapped, that nothing later in the prefix
            // overwrites; not zeros, which a fresh cluster reads anyway.
            int lost = Enumerable.Range(0, flush).Reverse().FirstOrDefault(i => records[i].Kind == RecordKind.Write
                && records[i].Data.Span.ContainsAnyExcept((byte)0)
                && !layout.TouchesMetadata(records[i].Offset, records[i].Length)
                && layout.ActiveData.Contains(records[i].Offset >> layout.ClusterBits)
                && !Enumerable.Range(i + 1, flush - i).Any(j => records[j].Offset < records[i].Offset + records[i].Length
                    && records[i].Offset < records[j].Offset + Math.Max(1, records[j].Length)), -1);
            if (lost < 0) continue;
            tried++;
            var state = new CrashState(flush + 1, flush + 1, CrashVariant.Everything, 0);
            using var device = w.Recorder.BuildState(0, records.Take(flush + 1).Where((_, i) => i != lost));
            using var image = Qcow2Image.Open(new BorrowedBlockDevice(device), new ImageOpenOptions { ReadOnly = true });
            var disk = new byte[w.Cell.DiskSize];
            image.Read(0, disk.AsMemory());
            if (!w.Model.Verify(disk, CrashStates.DurableOp(w, state), CrashStates.LastStartedOp(w, state)).Ok) caught++;
        }
        output.WriteLine($"lost flushed writes: {tried}, caught: {caught}");
        Assert.True(tried >= 5);
        Assert.Equal(tried, caught);
    }
}
