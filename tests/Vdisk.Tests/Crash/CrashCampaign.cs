using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;

namespace Vdisk.Tests.Crash;

/// <summary>The campaign's tallies for one cell (or several, added up).</summary>
public sealed class CampaignCounts : CampaignTally
{
    public int Workloads, States, Clean, LeaksOnly, CorruptDirty, Repaired, QemuChecked, RefcountGrowths, CrashesInRepair;
    public int FlushedMismatches, UnflushedMismatches, StatesWithMismatch;
    public int SnapshotCreates, SnapshotApplies, SnapshotDeletes, Resizes, L1Grows;
    public int InsideSnapshotOp, InsideResize, CopiedOnly, NewSize;

    public string Summary(string name) =>
        $"{name,-28} workloads {Workloads,3} (reftable grew in {RefcountGrowths}) | states {States,5}: clean {Clean}, leaks-only {LeaksOnly}, " +
        $"corrupt+dirty {CorruptDirty}, repaired {Repaired}, qemu-checked {QemuChecked}, crashes inside a repair {CrashesInRepair} | mismatches: flushed {FlushedMismatches}, " +
        $"unflushed {UnflushedMismatches} | ops: snapshot create {SnapshotCreates}, apply {SnapshotApplies}, delete {SnapshotDeletes}, resize {Resizes} " +
        $"(L1 moved {L1Grows}) | states inside a snapshot op {InsideSnapshotOp} (COPIED-only {CopiedOnly}), inside a resize {InsideResize} " +
        $"(new size {NewSize}) | failures {FailureCount} | variants {Variants}";
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
    /// repaired (true); the third says that COPIED-flag errors are allowed (the crash interrupted a snapshot
    /// operation). Returns null when it is fine, else the problem.
    /// </summary>
    public Func<MemoryBlockDevice, bool, bool, string?>? ExternalCheck { get; init; }
    public int SampleEvery { get; init; } = 50;
    /// <summary>Every this many states that need a repair, the repair itself is recorded and crashed in a few places.</summary>
    public int CrashRepairEvery { get; init; } = 8;
    private const int CrashesPerRepair = 3;

    public void Run(CrashWorkload w, int stateCount, CampaignCounts counts)
    {
        counts.Workloads++;
        if (w.RefcountTableGrew) counts.RefcountGrowths++;
        counts.SnapshotCreates += w.Ops.Count(o => o.Kind == OpKind.SnapshotCreate);
        counts.SnapshotApplies += w.Ops.Count(o => o.Kind == OpKind.SnapshotApply);
        counts.SnapshotDeletes += w.Ops.Count(o => o.Kind == OpKind.SnapshotDelete);
        counts.Resizes += w.Ops.Count(o => o.Kind == OpKind.Resize);
        counts.L1Grows += w.L1Grows;
        foreach (var p in w.LiveProblems) counts.Fail($"{w.Cell} seed {w.Seed}: {p}");
        var rng = new Random(w.Seed * 7919 + 1);
        var builder = new CrashStateBuilder(w.Recorder, w.Final);
        foreach (var state in CrashStates.Choose(w.Records, stateCount, rng))
        {
            var device = builder.Build(state);
            counts.States++;
            counts.CountVariant(state.Variant);
            try { Evaluate(w, state, device, counts, nested: false); }
            catch (Exception e) { counts.Fail($"{w.Cell} seed {w.Seed} {state}: {e.GetType().Name}: {e.Message}"); }
        }
    }

    private void Evaluate(CrashWorkload w, CrashState state, MemoryBlockDevice device, CampaignCounts counts, bool nested)
    {
        string where = $"{w.Cell} seed {w.Seed} {state}{(nested ? " (crashed inside the repair)" : "")}";
        int durable = CrashStates.DurableOp(w, state), last = CrashStates.LastStartedOp(w, state);
        var disk = new byte[w.Cell.DiskSize];
        bool needsRepair;
        var interrupted = CrashStates.InterruptedOps(w, state);
        // A snapshot operation rewrites COPIED flags after the refcounts change; cut in between, they disagree.
        bool copiedAllowed = interrupted.Any(o => o.IsSnapshotOp);
        var sizes = CrashStates.AllowedSizes(w, state, durable, last);
        if (!nested)
        {
            if (copiedAllowed) counts.InsideSnapshotOp++;
            if (interrupted.Any(o => o.Kind == OpKind.Resize)) counts.InsideResize++;
        }
        bool sampled = !nested && ExternalCheck is not null && counts.States % SampleEvery == 0;
        if (sampled && ExternalCheck!(device, false, copiedAllowed) is { } crashProblem) counts.Fail($"{where}: external check of the crash state: {crashProblem}");
        CheckSingleReferences(device, "after the crash", where, counts);
        using (var ro = Qcow2Image.Open(new BorrowedBlockDevice(device), new ImageOpenOptions { ReadOnly = true }))
        {
            ReadAndVerify(w, ro, disk, durable, last, sizes, "after the crash", where, counts);
            if (!nested && ro.Size != sizes[0] && interrupted.Any(o => o.Kind == OpKind.Resize)) counts.NewSize++;
            var condition = CrashOracles.CheckAsLeft(ro, copiedAllowed);
            needsRepair = condition.NeedsRepair;
            if (!nested)
            {
                if (condition.Clean) counts.Clean++;
                else if (condition.LeaksOnly) counts.LeaksOnly++;
                else if (condition.Dirty) counts.CorruptDirty++;
                if (condition.CopiedOnly && condition.Corrupt) counts.CopiedOnly++;
            }
            if (condition.Problem(w.Cell.LazyRefcounts) is { } problem) counts.Fail($"{where}: {problem}");
        }

        if (needsRepair && !nested) counts.Repaired++;
        var origin = needsRepair && !nested && counts.Repaired % CrashRepairEvery == 0 ? device.Clone() : null;
        if (CrashOracles.Repair(device) is { } repairProblem) counts.Fail($"{where}: {repairProblem}");
        if (origin is not null) CrashInsideRepair(w, state, origin, counts);
        using (var after = Qcow2Image.Open(new BorrowedBlockDevice(device), new ImageOpenOptions { ReadOnly = true }))
        {
            if (CrashOracles.NotCleanAfterRepair(after) is { } problem) counts.Fail($"{where}: {problem}");
            ReadAndVerify(w, after, disk, durable, last, sizes, "after repair", where, counts);
        }

        CheckSingleReferences(device, "after repair", where, counts);

        if (sampled)
        {
            counts.QemuChecked++;
            if (ExternalCheck!(device, true, false) is { } problem) counts.Fail($"{where}: external check after repair: {problem}");
        }
    }

    /// <summary>
    /// The repair (read-write open, check -r all) of <paramref name="origin"/> recorded, and crashed at a few points:
    /// what that leaves must meet the same criteria as the crash state it was repairing, the data included.
    /// </summary>
    private void CrashInsideRepair(CrashWorkload w, CrashState state, MemoryBlockDevice origin, CampaignCounts counts)
    {
        var recorder = new RecordingBlockDevice(origin, leaveInnerOpen: true);
        using (var rw = Qcow2Image.Open(recorder, new ImageOpenOptions())) rw.Check(CheckRepair.All);
        var records = recorder.Records;
        if (records.Length == 0) return;
        var prefix = recorder.BuildState(0);
        int applied = 0;
        var none = QcowLayout.Read(prefix);
        foreach (var inner in CrashStates.Choose(records, CrashesPerRepair, new Random(state.Seed)))
        {
            for (; applied < inner.Prefix; applied++) records[applied].ApplyTo(prefix);
            var variant = inner.Variant is CrashVariant.MetadataOnly or CrashVariant.DataOnly ? CrashVariant.Subset : inner.Variant;
            counts.CrashesInRepair++;
            Evaluate(w, state, CrashStates.Build(records, inner with { Variant = variant }, prefix, none), counts, nested: true);
        }
    }

    private static void CheckSingleReferences(MemoryBlockDevice device, string when, string where, CampaignCounts counts)
    {
        if (CrashOracles.ReferencedTwice(device) is { } problem) counts.Fail($"{where}: {when}: {problem}");
    }

    /// <summary>Criteria 1 and 2, and a size the guest had: the old or the new one of an interrupted resize or apply.</summary>
    private static void ReadAndVerify(CrashWorkload w, DiskImage image, byte[] disk, int durable, int last, List<long> sizes, string when, string where, CampaignCounts counts)
    {
        if (!sizes.Contains(image.Size)) counts.Fail($"{where}: size {image.Size} {when}, expected one of {string.Join(", ", sizes)}");
        if (CrashWorkload.ReadGuest(image, disk) is { } problem) counts.Fail($"{where}: {when} the image {problem}");
        CountVerdict(w.Model.Verify(disk, durable, last), when, where, counts);
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
