using Vdisk.BlockIO;
using Vdisk.Images;

namespace Vdisk.Tests.Crash;

/// <summary>The commit campaign's tallies for one cell (or several, added up).</summary>
public sealed class CommitCounts : CampaignTally
{
    /// <summary>What check found on one of the files as the crash left it.</summary>
    public sealed class FileTally
    {
        public int Clean, LeaksOnly, CorruptDirty, Repaired;

        public void Add(CrashCondition c)
        {
            if (c.Clean) Clean++;
            else if (c.LeaksOnly) LeaksOnly++;
            else if (c.Dirty) CorruptDirty++;
            if (c.NeedsRepair) Repaired++;
        }

        public override string ToString() => $"clean {Clean}, leaks-only {LeaksOnly}, corrupt+dirty {CorruptDirty}, repaired {Repaired}";
    }

    public int Workloads, KeptTop, ClosedFirst, GrownBase;
    public int States, InsideCopy, InsideEmptying, BaseCommitted, TopEmptied, QemuChecked;
    public int ChainFlushed, ChainUnflushed, BaseFlushed, BaseUnflushed, StatesWithMismatch;
    public FileTally Top { get; } = new();
    public FileTally Base { get; } = new();

    public string Summary(string name) =>
        $"{name,-28} workloads {Workloads,2} (commit -d {KeptTop}, of a closed top {ClosedFirst}, base grown {GrownBase}) | states {States,4}: " +
        $"inside the copy {InsideCopy}, inside the emptying {InsideEmptying}, copy durable {BaseCommitted}, emptied top durable {TopEmptied}, " +
        $"qemu-checked {QemuChecked} | top: {Top} | base: {Base} | mismatches: chain flushed {ChainFlushed}, unflushed {ChainUnflushed}, " +
        $"base flushed {BaseFlushed}, unflushed {BaseUnflushed} | failures {FailureCount} | variants {Variants}";
}

/// <summary>
/// Runs crash states of a commit workload (both files cut at one tick) through the pass criteria: (1, 2) the chain
/// reads the chain model, which the commit never changes, and the base alone the base model, which the commit makes
/// what the chain read: once the copy's flush is durable, exactly that; (3) check finds on each file at most leaks,
/// or with lazy refcounts errors only under the dirty bit; (4) repair leaves both clean, the data as it was; (5) no
/// host cluster is referenced twice; and once the emptying is durable (and before new writes), the top allocates
/// nothing and reads through to the base. Optionally an external check of a sample of states.
/// </summary>
public sealed class CommitCampaign
{
    /// <summary>
    /// Runs on every <see cref="SampleEvery"/>th state with the top and the base, once as the crash left them
    /// (third argument false) and once repaired (true). Returns null when they are fine, else the problem.
    /// </summary>
    public Func<MemoryBlockDevice, MemoryBlockDevice, bool, string?>? ExternalCheck { get; init; }
    public int SampleEvery { get; init; } = 50;

    private static readonly ImageOpenOptions ReadOnly = new() { ReadOnly = true };

    public void Run(CommitWorkload w, int stateCount, CommitCounts counts)
    {
        counts.Workloads++;
        if (w.Flavour.KeepTop) counts.KeptTop++;
        if (w.Flavour.TopClosedFirst) counts.ClosedFirst++;
        if (w.Flavour.GrowBase) counts.GrownBase++;
        foreach (var p in w.LiveProblems) counts.Fail($"{w}: {p}");
        var top = new CrashStateBuilder(w.TopRecorder, w.TopFinal);
        var bottom = new CrashStateBuilder(w.BaseRecorder, w.BaseFinal);
        foreach (var state in ChainCrashStates.Choose(w, stateCount, new Random(w.Seed * 7919 + 3)))
        {
            var topFile = top.Build(state.Top);
            var baseFile = bottom.Build(state.Base);
            counts.States++;
            counts.CountVariant(state.Variant);
            try { Evaluate(w, state, topFile, baseFile, counts); }
            catch (Exception e) { counts.Fail($"{w} {state}: {e.GetType().Name}: {e.Message}"); }
        }
    }

    /// <summary>Runs one state (the files as the crash left them, repaired in place) through the criteria.</summary>
    public void Evaluate(CommitWorkload w, ChainCrashState s, MemoryBlockDevice top, MemoryBlockDevice bottom, CommitCounts counts)
    {
        string where = $"{w} {s}";
        var expect = Expectations.For(w, s.Tick);
        if (ChainCrashStates.Inside(w.Copy, s.Tick)) counts.InsideCopy++;
        if (ChainCrashStates.Inside(w.Empty, s.Tick)) counts.InsideEmptying++;
        if (expect.Committed) counts.BaseCommitted++;
        // The emptying is durable, and nothing was written to the top since: it must allocate nothing.
        bool emptied = w.Empty is { DurableAt: > 0 } empty && empty.DurableAt <= s.Tick && s.Tick <= w.ReopenedAt;

        bool sampled = ExternalCheck is not null && counts.States % SampleEvery == 0;
        if (sampled && ExternalCheck!(top, bottom, false) is { } crashProblem) counts.Fail($"{where}: external check of the crash state: {crashProblem}");
        CheckSingleReferences(top, bottom, "after the crash", where, counts);
        VerifyData(w, top, bottom, expect, "after the crash", where, counts);
        using (var t = CommitWorkload.OpenAlone(top, ReadOnly))
        {
            var condition = CrashOracles.CheckAsLeft(t, copiedAllowed: false);
            counts.Top.Add(condition);
            if (condition.Problem(w.Cell.LazyRefcounts) is { } problem) counts.Fail($"{where}: the top: {problem}");
            if (emptied)
            {
                counts.TopEmptied++;
                if (CommitWorkload.FirstAllocated(t) is { } at) counts.Fail($"{where}: the emptied top still allocates guest offset 0x{at:x}");
            }
        }
        using (var b = CommitWorkload.OpenAlone(bottom, ReadOnly))
        {
            var condition = CrashOracles.CheckAsLeft(b, copiedAllowed: false);
            counts.Base.Add(condition);
            if (condition.Problem(w.Cell.LazyRefcounts) is { } problem) counts.Fail($"{where}: the base: {problem}");
        }

        foreach (var (name, file) in new[] { ("top", top), ("base", bottom) })
        {
            if (CrashOracles.Repair(file) is { } problem) counts.Fail($"{where}: the {name}: {problem}");
            using var repaired = CommitWorkload.OpenAlone(file, ReadOnly);
            if (CrashOracles.NotCleanAfterRepair(repaired) is { } dirty) counts.Fail($"{where}: the {name}: {dirty}");
        }
        VerifyData(w, top, bottom, expect, "after repair", where, counts);
        CheckSingleReferences(top, bottom, "after repair", where, counts);

        if (sampled)
        {
            counts.QemuChecked++;
            if (ExternalCheck!(top, bottom, true) is { } problem) counts.Fail($"{where}: external check after repair: {problem}");
        }
    }

    /// <summary>What a state guarantees: through which operation the chain and the base are durable, and the base's size.</summary>
    private sealed record Expectations(int Chain, int Base, int Last, bool Committed, long[] BaseSizes)
    {
        public static Expectations For(CommitWorkload w, long tick)
        {
            int bottom = ChainCrashStates.DurableThrough(w, ChainFile.Base, tick), last = ChainCrashStates.LastStartedOp(w, tick);
            bool committed = bottom >= w.Copy.Index;
            long[] sizes = committed ? [w.Cell.DiskSize] : last >= w.Copy.Index ? [w.BaseSizeBefore, w.Cell.DiskSize] : [w.BaseSizeBefore];
            return new Expectations(ChainCrashStates.ChainDurableThrough(w, tick), bottom, last, committed, sizes);
        }
    }

    /// <summary>Criteria 1 and 2 for the chain, and for the base alone with the size it may have.</summary>
    private static void VerifyData(CommitWorkload w, MemoryBlockDevice top, MemoryBlockDevice bottom, Expectations e, string when, string where, CommitCounts counts)
    {
        var disk = new byte[w.Cell.DiskSize];
        using (var chain = CommitWorkload.OpenChain(top, bottom, ReadOnly))
        {
            if (chain.Size != w.Cell.DiskSize) counts.Fail($"{where}: the chain has size {chain.Size} {when}, expected {w.Cell.DiskSize}");
            if (CrashWorkload.ReadGuest(chain, disk) is { } problem) counts.Fail($"{where}: {when} the chain {problem}");
            var v = w.Chain.Verify(disk, e.Chain, e.Last);
            counts.ChainFlushed += v.FlushedMismatches;
            counts.ChainUnflushed += v.UnflushedMismatches;
            Count(v, "the chain");
        }
        using (var b = CommitWorkload.OpenAlone(bottom, ReadOnly))
        {
            if (!e.BaseSizes.Contains(b.Size)) counts.Fail($"{where}: the base has size {b.Size} {when}, expected one of {string.Join(", ", e.BaseSizes)}");
            if (CrashWorkload.ReadGuest(b, disk) is { } problem) counts.Fail($"{where}: {when} the base {problem}");
            var v = w.Base.Verify(disk, e.Base, e.Last);
            counts.BaseFlushed += v.FlushedMismatches;
            counts.BaseUnflushed += v.UnflushedMismatches;
            Count(v, "the base");
        }

        void Count(SectorModel.Verdict v, string what)
        {
            if (v.Ok) return;
            counts.StatesWithMismatch++;
            counts.Fail($"{where}: {what} {when}: {v.FlushedMismatches} flushed and {v.UnflushedMismatches} unflushed sectors wrong; first: {v.FirstProblem}");
        }
    }

    private static void CheckSingleReferences(MemoryBlockDevice top, MemoryBlockDevice bottom, string when, string where, CommitCounts counts)
    {
        if (CrashOracles.ReferencedTwice(top) is { } t) counts.Fail($"{where}: the top {when}: {t}");
        if (CrashOracles.ReferencedTwice(bottom) is { } b) counts.Fail($"{where}: the base {when}: {b}");
    }
}
