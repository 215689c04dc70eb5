using System.Collections.Immutable;
using Vdisk.BlockIO;

namespace Vdisk.Tests.Crash;

/// <summary>
/// A crash of both files of a chain at one tick of their shared clock: each file keeps its records up to its own last
/// flush before that tick, and some of its later ones before it (<see cref="CrashState"/>, one for each file).
/// </summary>
public sealed record ChainCrashState(long Tick, CrashState Top, CrashState Base)
{
    public CrashVariant Variant => Top.Variant;
    public override string ToString() => $"tick {Tick} (top: {Top}; base: {Base})";
}

/// <summary>Chooses the crash states of a commit workload and says what each guarantees.</summary>
public static class ChainCrashStates
{
    /// <summary>
    /// Half at any tick; a quarter while the commit runs (from the copy's start until the chain is reopened); a
    /// quarter after its last step is durable and before the top is written again. In order of their tick, so that
    /// both files' prefixes only grow.
    /// </summary>
    public static List<ChainCrashState> Choose(CommitWorkload w, int count, Random rng)
    {
        var top = (w.TopRecorder.Records, w.TopRecorder.RecordTimes);
        var bottom = (w.BaseRecorder.Records, w.BaseRecorder.RecordTimes);
        var last = w.Empty ?? w.Copy;
        long durable = last.DurableAt > 0 ? last.DurableAt : last.End;
        var states = new List<ChainCrashState>();
        for (int i = 0; i < count; i++)
        {
            long tick = (i % 4) switch
            {
                0 or 2 => Between(0, w.Clock.Now),
                1 => Between(w.Copy.Start, w.ReopenedAt),
                _ => Between(durable - 1, w.ReopenedAt),
            };
            var variant = CrashStates.PickVariant(rng);
            states.Add(new ChainCrashState(tick, Cut(top, tick, variant, rng.Next()), Cut(bottom, tick, variant, rng.Next())));
        }
        states.Sort((a, b) => a.Tick.CompareTo(b.Tick));
        return states;

        // A tick in (from, to].
        long Between(long from, long to) => from + 1 + rng.NextInt64(Math.Max(1, to - from));
    }

    private static CrashState Cut((ImmutableArray<DeviceRecord> Records, ImmutableArray<long> Times) log, long tick, CrashVariant variant, int seed)
    {
        int cut = log.Times.AsSpan().BinarySearch(tick);
        cut = cut >= 0 ? cut + 1 : ~cut;
        return CrashStates.At(log.Records, cut, variant, seed);
    }

    /// <summary>
    /// The last operation through which every operation on <paramref name="file"/> is durable in the state: the
    /// operation before the first on that file after the last one whose flush is in the file's durable prefix.
    /// </summary>
    public static int DurableThrough(CommitWorkload w, ChainFile file, long tick)
    {
        int point = -1;
        foreach (var op in w.Ops)
            if (op.File == file && op.DurableAt > 0 && op.DurableAt <= tick) point = op.Index;
        int next = w.Ops.FindIndex(point + 1, o => o.File == file);
        return next < 0 ? w.Ops.Count - 1 : next - 1;
    }

    /// <summary>
    /// The last operation through which the chain's content is durable: every operation up to it is durable on the
    /// file it changed, since each changes one.
    /// </summary>
    public static int ChainDurableThrough(CommitWorkload w, long tick) =>
        Math.Min(DurableThrough(w, ChainFile.Top, tick), DurableThrough(w, ChainFile.Base, tick));

    /// <summary>The last operation that had started by the tick: later ones cannot have reached either file.</summary>
    public static int LastStartedOp(CommitWorkload w, long tick) => w.Ops.FindLastIndex(o => o.Start < tick);

    /// <summary>True when the crash cut the operation short: it had written some of its records, not all.</summary>
    public static bool Inside(ChainOp? op, long tick) => op is not null && op.Start < tick && tick < op.End;
}
