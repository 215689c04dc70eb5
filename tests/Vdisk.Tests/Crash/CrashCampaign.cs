using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;

namespace Vdisk.Tests.Crash;

/// <summary>The campaign's tallies for one cell (or several, added up).</summary>
public sealed class CampaignCounts
{
    public int Workloads, States, Clean, LeaksOnly, CorruptDirty, Repaired, QemuChecked, RefcountGrowths;
    public int FlushedMismatches, UnflushedMismatches, StatesWithMismatch;
    public int FailureCount;
    public Dictionary<CrashVariant, int> ByVariant { get; } = new();
    public List<string> Failures { get; } = new();

    public void Fail(string what)
    {
        FailureCount++;
        if (Failures.Count < 25) Failures.Add(what);
    }

    public string Summary(string name) =>
        $"{name,-28} workloads {Workloads,3} (reftable grew in {RefcountGrowths}) | states {States,5}: clean {Clean}, leaks-only {LeaksOnly}, " +
        $"corrupt+dirty {CorruptDirty}, repaired {Repaired}, qemu-checked {QemuChecked} | mismatches: flushed {FlushedMismatches}, " +
        $"unflushed {UnflushedMismatches} | failures {FailureCount} | variants {string.Join(' ', ByVariant.OrderBy(k => k.Key).Select(k => $"{k.Key}={k.Value}"))}";
}

/// <summary>
/// Runs crash states of a workload through the pass criteria: (1, 2) data read read-only matches the model;
/// (3) check finds at most leaks, or with lazy refcounts errors only under the dirty bit; repair (a read-write
/// open, then check -r all) leaves a clean image whose data still matches; (4) no host cluster is referenced twice;
/// (5) optionally an external check of a sample of repaired states.
/// </summary>
public sealed class CrashCampaign
{
    /// <summary>
    /// Runs on every <see cref="SampleEvery"/>th state, once as the crash left it (second argument false) and once
    /// repaired (true); returns null when it is fine, else the problem.
    /// </summary>
    public Func<MemoryBlockDevice, bool, string?>? ExternalCheck { get; init; }
    public int SampleEvery { get; init; } = 50;

    public void Run(CrashWorkload w, int stateCount, CampaignCounts counts)
    {
        counts.Workloads++;
        if (w.RefcountTableGrew) counts.RefcountGrowths++;
        foreach (var p in w.LiveProblems) counts.Fail($"{w.Cell} seed {w.Seed}: {p}");
        var finalLayout = QcowLayout.Read(w.Final);
        var rng = new Random(w.Seed * 7919 + 1);
        var prefix = w.Recorder.BuildState(0);
        int applied = 0;
        QcowLayout? metadata = null;
        foreach (var state in CrashStates.Choose(w, stateCount, rng))
        {
            if (metadata is null || applied != state.Prefix)
            {
                for (; applied < state.Prefix; applied++) w.Records[applied].ApplyTo(prefix);
                metadata = QcowLayout.Read(prefix);
                metadata.MetadataClusters.UnionWith(finalLayout.MetadataClusters);
            }
            var device = CrashStates.Build(w, state, prefix, metadata);
            counts.States++;
            counts.ByVariant[state.Variant] = counts.ByVariant.GetValueOrDefault(state.Variant) + 1;
            try { Evaluate(w, state, device, counts); }
            catch (Exception e) { counts.Fail($"{w.Cell} seed {w.Seed} {state}: {e.GetType().Name}: {e.Message}"); }
        }
    }

    private void Evaluate(CrashWorkload w, CrashState state, MemoryBlockDevice device, CampaignCounts counts)
    {
        string where = $"{w.Cell} seed {w.Seed} {state}";
        int durable = CrashStates.DurableOp(w, state), last = CrashStates.LastStartedOp(w, state);
        var disk = new byte[w.Cell.DiskSize];
        bool needsRepair;
        bool sampled = ExternalCheck is not null && counts.States % SampleEvery == 0;
        if (sampled && ExternalCheck!(device, false) is { } crashProblem) counts.Fail($"{where}: external check of the crash state: {crashProblem}");
        using (var ro = Qcow2Image.Open(new BorrowedBlockDevice(device), new ImageOpenOptions { ReadOnly = true }))
        {
            ro.Read(0, disk.AsMemory());
            CountVerdict(w.Model.Verify(disk, durable, last), "after the crash", where, counts);
            var check = ro.Check();
            needsRepair = !check.IsClean || ro.IsDirty;
            if (check.Corruptions == 0 && check.CheckErrors == 0)
            {
                if (check.Leaks == 0) counts.Clean++; else counts.LeaksOnly++;
            }
            else if (w.Cell.LazyRefcounts && ro.IsDirty) counts.CorruptDirty++;
            else counts.Fail($"{where}: check found {check.Corruptions} corruptions{(ro.IsDirty ? "" : " without the dirty bit")}: {string.Join("; ", check.Messages.Take(4))}");
        }

        using (var rw = Qcow2Image.Open(new BorrowedBlockDevice(device), new ImageOpenOptions()))
        {
            var repair = rw.Check(CheckRepair.All);
            if (repair.Corruptions != 0 || repair.CheckErrors != 0)
                counts.Fail($"{where}: check -r all left {repair.Corruptions} corruptions: {string.Join("; ", repair.Messages.Take(4))}");
        }
        if (needsRepair) counts.Repaired++;
        using (var after = Qcow2Image.Open(new BorrowedBlockDevice(device), new ImageOpenOptions { ReadOnly = true }))
        {
            var check = after.Check();
            if (!check.IsClean || after.IsDirty)
                counts.Fail($"{where}: not clean after repair ({check.Corruptions} corruptions, {check.Leaks} leaks, dirty {after.IsDirty}): {string.Join("; ", check.Messages.Take(4))}");
            after.Read(0, disk.AsMemory());
            CountVerdict(w.Model.Verify(disk, durable, last), "after repair", where, counts);
        }

        var layout = QcowLayout.Read(device);
        var twice = layout.ReferencedTwice.Take(3).ToList();
        if (twice.Count > 0) counts.Fail($"{where}: host clusters referenced twice after repair: {string.Join(", ", twice)}");

        if (sampled)
        {
            counts.QemuChecked++;
            if (ExternalCheck!(device, true) is { } problem) counts.Fail($"{where}: external check after repair: {problem}");
        }
    }

    private static void CountVerdict(SectorModel.Verdict v, string when, string where, CampaignCounts counts)
    {
        if (v.Ok) return;
        counts.StatesWithMismatch++;
        counts.FlushedMismatches += v.FlushedMismatches;
        counts.UnflushedMismatches += v.UnflushedMismatches;
        counts.Fail($"{where}: data {when}: {v.FlushedMismatches} flushed and {v.UnflushedMismatches} unflushed sectors wrong; first: {v.FirstProblem}");
    }

    /// <summary>States to run in all, from VDISK_CRASH_STATES or the CI default.</summary>
    public static int TotalStates(int ciDefault)
    {
        var text = Environment.GetEnvironmentVariable("VDISK_CRASH_STATES");
        return int.TryParse(text, out int n) && n > 0 ? n : ciDefault;
    }
}
