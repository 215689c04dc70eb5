using Vdisk.BlockIO;
using Vdisk.Tests.Crash;
using Xunit;
using Xunit.Abstractions;

namespace Vdisk.Interop.Tests.Crash;

/// <summary>
/// The crash campaign against the oracle: on a sample of crash states the real <c>qemu-img check</c> must find at most
/// leaks (errors only under the dirty bit) as the crash left them, and nothing once Vdisk has repaired them.
/// The campaign's own criteria are checked on every state as well; so are the commit campaign's chains.
/// </summary>
public class CrashStatesPassQemuCheckTests(ITestOutputHelper output)
{
    private const int StatesPerCell = 40;
    private const int SampleEvery = 4;
    private const int CommitStatesPerCell = 20;

    public static TheoryData<int, int, bool, CacheMode> Cells() => CrashMatrix.Cells();

    [Theory]
    [MemberData(nameof(Cells))]
    public void RepairedCrashStatesPassQemuImgCheck(int clusterSize, int refcountBits, bool lazy, CacheMode cache)
    {
        using var dir = new TempDir();
        var path = dir.File("state.qcow2");
        var cell = CrashMatrix.Cell(clusterSize, refcountBits, lazy, cache);
        var counts = new CampaignCounts();
        var campaign = new CrashCampaign
        {
            SampleEvery = SampleEvery,
            ExternalCheck = (device, repaired, copiedAllowed) => QemuCheck(path, device, repaired, copiedAllowed),
        };
        // Other seeds than the unit tests' campaign, so that the two runs cover different states.
        var workload = CrashWorkload.Run(cell, 90_000 + clusterSize + (lazy ? 1 : 0) + (int)cache * 10);
        campaign.Run(workload, StatesPerCell, counts);
        output.WriteLine(counts.Summary(cell.ToString()));
        foreach (var f in counts.Failures) output.WriteLine("  " + f);

        Assert.True(counts.QemuChecked >= StatesPerCell / SampleEvery, $"only {counts.QemuChecked} states went to qemu-img");
        Assert.True(counts.FailureCount == 0, $"{counts.FailureCount} failures, first: {counts.Failures.FirstOrDefault()}");
    }

    public static TheoryData<int, bool, CacheMode> CommitCells() => CrashMatrix.CommitCells();

    /// <summary>The commit campaign's states, both files: the top checked with the base beside it as its backing file.</summary>
    [Theory]
    [MemberData(nameof(CommitCells))]
    public void CommitCrashStatesPassQemuImgCheck(int clusterSize, bool lazy, CacheMode cache)
    {
        using var dir = new TempDir();
        string top = dir.File("top.qcow2"), bottom = dir.File(CommitWorkload.BaseName);
        var cell = CrashMatrix.CommitCell(clusterSize, lazy, cache);
        var counts = new CommitCounts();
        var campaign = new CommitCampaign
        {
            SampleEvery = SampleEvery,
            // The base first: it is the top's backing file, which qemu-img check opens too.
            ExternalCheck = (topFile, baseFile, repaired) =>
                QemuCheck(bottom, baseFile, repaired, copiedAllowed: false) is { } b ? $"the base: {b}"
                : QemuCheck(top, topFile, repaired, copiedAllowed: false) is { } t ? $"the top: {t}" : null,
        };
        // Other seeds and flavours than the unit tests' campaign.
        int cellNumber = CrashMatrix.CommitCellNumber(clusterSize, lazy, cache);
        var workload = CommitWorkload.Run(cell, 90_000 + cellNumber, CommitFlavour.Turn(cellNumber + 5));
        campaign.Run(workload, CommitStatesPerCell, counts);
        output.WriteLine(counts.Summary(cell.ToString()));
        foreach (var f in counts.Failures) output.WriteLine("  " + f);

        Assert.True(counts.QemuChecked >= CommitStatesPerCell / SampleEvery, $"only {counts.QemuChecked} states went to qemu-img");
        Assert.True(counts.FailureCount == 0, $"{counts.FailureCount} failures, first: {counts.Failures.FirstOrDefault()}");
    }

    /// <summary>
    /// Writes the file to <paramref name="path"/> and runs qemu-img check. Before repair QEMU must agree with criterion
    /// 3: leaks (exit 3) at most, errors (2) only under the dirty bit, or COPIED-flag errors alone when the crash cut
    /// a snapshot operation short. Returns null when it does, else the problem.
    /// </summary>
    private static string? QemuCheck(string path, MemoryBlockDevice device, bool repaired, bool copiedAllowed)
    {
        File.WriteAllBytes(path, device.ToArray());
        var r = Tools.Run("qemu-img", "check", "-f", "qcow2", path);
        bool copiedOnly = copiedAllowed && r.StdOut.Split('\n').Where(l => l.StartsWith("ERROR", StringComparison.Ordinal))
            .All(l => l.StartsWith("ERROR OFLAG_COPIED", StringComparison.Ordinal));
        bool ok = r.ExitCode == 0 || (!repaired && (r.ExitCode == 3 || (r.ExitCode == 2 && (copiedOnly || QcowLayout.Read(device).Dirty))));
        return ok ? null : $"qemu-img check exit {r.ExitCode}: {r.StdOut.Trim()} {r.StdErr.Trim()}";
    }
}
