using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;

namespace Vdisk.Tests.Crash;

/// <summary>The file of the chain an operation changes.</summary>
public enum ChainFile { Base, Top }

/// <summary>
/// How a commit workload commits: <see cref="KeepTop"/> is commit -d (the top keeps its clusters);
/// <see cref="TopClosedFirst"/> commits a closed top, opened read-only, as the CLI does, instead of the live one with
/// what it has not flushed; <see cref="GrowBase"/> makes the base smaller than the top, so that the commit grows it.
/// </summary>
public sealed record CommitFlavour(bool KeepTop, bool TopClosedFirst, bool GrowBase)
{
    /// <summary>The flavours in turn: successive turns go through every combination.</summary>
    public static CommitFlavour Turn(int turn) => new(KeepTop: (turn & 1) != 0, TopClosedFirst: (turn & 2) != 0, GrowBase: turn % 3 == 0);

    public override string ToString() =>
        $"commit{(KeepTop ? " -d" : "")}{(TopClosedFirst ? " of the closed top" : " of the live top")}{(GrowBase ? ", base grown" : "")}";
}

/// <summary>
/// An operation on one file of the chain, and when it ran on the clock the two recorders share: its records have
/// ticks in (<see cref="Start"/>, <see cref="End"/>]. <see cref="DurableAt"/> is the tick of the flush on
/// <see cref="File"/> that makes it, and everything before it on that file, durable once it returns; 0 if none does.
/// </summary>
public sealed record ChainOp(int Index, OpKind Kind, ChainFile File, long Offset, long Length, long Start, long End, long DurableAt);

/// <summary>
/// A seeded workload on a backing chain, each file over its own recording device and both on one clock: random
/// writes, write-zeroes, discards and flushes to the base alone, then (the base closed) to a qcow2 overlay over it;
/// then a commit through <see cref="ImageCommit"/> (the copy into the base, and without -d the emptying of the top);
/// then, the chain reopened, more requests to the top, and a clean close. The base is written only before the top
/// is: while an overlay holds data, changing its backing file would change what the chain reads only where the
/// overlay's allocations had not landed, which no real use does.
/// Two models follow it: what the chain reads (the commit leaves it as it is) and what the base alone reads (the
/// commit makes it what the chain read).
/// </summary>
public sealed class CommitWorkload
{
    public const string BaseName = "base.qcow2";

    private readonly Random _rng;
    private readonly ImageOpenOptions _open;

    private CommitWorkload(CrashCell cell, int seed, CommitFlavour flavour)
    {
        Cell = cell;
        Seed = seed;
        Flavour = flavour;
        _rng = new Random(seed);
        Chain = new SectorModel(cell.DiskSize);
        Base = new SectorModel(cell.DiskSize);
        BaseSizeBefore = flavour.GrowBase ? cell.DiskSize * 3 / 4 : cell.DiskSize;
        var options = new Dictionary<string, string>();
        // Every other run keeps the caches small, so that L2 tables and refcount blocks are evicted mid-run.
        if (seed % 2 == 1) options["l2-cache-size"] = (4 * cell.ClusterSize).ToString();
        _open = new ImageOpenOptions { Cache = cell.Cache, Options = options };
    }

    public CrashCell Cell { get; }
    public int Seed { get; }
    public CommitFlavour Flavour { get; }
    /// <summary>What the chain (the top over the base) reads.</summary>
    public SectorModel Chain { get; }
    /// <summary>What the base alone reads.</summary>
    public SectorModel Base { get; }
    public long BaseSizeBefore { get; }
    public List<ChainOp> Ops { get; } = new();
    public RecordClock Clock { get; } = new();
    public RecordingBlockDevice TopRecorder { get; private set; } = null!;
    public RecordingBlockDevice BaseRecorder { get; private set; } = null!;
    /// <summary>The files after the clean close.</summary>
    public MemoryBlockDevice TopFinal { get; private set; } = null!;
    public MemoryBlockDevice BaseFinal { get; private set; } = null!;
    public ChainOp Copy => Ops.Single(o => o.Kind == OpKind.CommitCopy);
    public ChainOp? Empty => Ops.SingleOrDefault(o => o.Kind == OpKind.CommitEmpty);
    /// <summary>The tick at which the chain was reopened after the commit: later records are new requests to the top.</summary>
    public long ReopenedAt { get; private set; }
    /// <summary>Problems seen on the live images.</summary>
    public List<string> LiveProblems { get; } = new();

    public override string ToString() => $"{Cell} seed {Seed} ({Flavour})";

    public static CommitWorkload Run(CrashCell cell, int seed, CommitFlavour flavour)
    {
        var w = new CommitWorkload(cell, seed, flavour);
        w.RunPhases();
        return w;
    }

    /// <summary>Opens <paramref name="top"/> with <paramref name="baseFile"/> as its backing file.</summary>
    public static Qcow2Image OpenChain(BlockDevice top, BlockDevice baseFile, ImageOpenOptions options) =>
        Qcow2Image.Open(new BorrowedBlockDevice(top), options with
        {
            BackingOpener = (_, backing) => Qcow2Image.Open(new BorrowedBlockDevice(baseFile), backing),
        });

    public static Qcow2Image OpenAlone(BlockDevice file, ImageOpenOptions options) =>
        Qcow2Image.Open(new BorrowedBlockDevice(file), options with { NoBacking = true });

    private void RunPhases()
    {
        var baseFile = CreateImage(BaseSizeBefore, null);
        var topFile = CreateImage(Cell.DiskSize, BaseName);
        BaseRecorder = new RecordingBlockDevice(baseFile, leaveInnerOpen: true, Clock);
        TopRecorder = new RecordingBlockDevice(topFile, leaveInnerOpen: true, Clock);
        int n = Cell.Operations;

        var baseImage = OpenAlone(BaseRecorder, _open);
        for (int i = 0; i < n * 3 / 10; i++) Request(baseImage, ChainFile.Base, BaseSizeBefore);
        Step(OpKind.Close, ChainFile.Base, baseImage.Dispose);
        VerifyLive(() => OpenAlone(BaseRecorder, _open with { ReadOnly = true }), Base.Current, "the base before the commit");

        var top = OpenChain(TopRecorder, BaseRecorder, _open);
        for (int i = 0; i < n / 2; i++) Request(top, ChainFile.Top, Cell.DiskSize);
        Commit(top);

        ReopenedAt = Clock.Now;
        top = OpenChain(TopRecorder, BaseRecorder, _open);
        for (int i = 0; i < n / 5; i++) Request(top, ChainFile.Top, Cell.DiskSize);
        Step(OpKind.Close, ChainFile.Top, top.Dispose);
        VerifyLive(() => OpenChain(TopRecorder, BaseRecorder, _open with { ReadOnly = true }), Chain.Current, "the chain at the end");
        TopFinal = topFile;
        BaseFinal = baseFile;
    }

    /// <summary>
    /// The commit: the copy into the base through a writable handle of its own, then without -d the emptying of the
    /// top, then the chain closed (its handle on the base has not seen the copy).
    /// </summary>
    private void Commit(Qcow2Image live)
    {
        var chain = live;
        if (Flavour.TopClosedFirst)
        {
            Step(OpKind.Close, ChainFile.Top, live.Dispose);
            chain = OpenChain(TopRecorder, BaseRecorder, _open with { ReadOnly = true });
        }
        VerifyLive(chain, Chain.Current, "the chain before the commit");
        Step(OpKind.CommitCopy, ChainFile.Base, () =>
        {
            using var target = OpenAlone(BaseRecorder, _open);
            ImageCommit.CopyIntoBase(chain, chain.Backing!, target);
            return LastFlush(BaseRecorder);
        });
        Base.Replace(Ops[^1].Index, Chain.Current);
        VerifyLive(() => OpenAlone(BaseRecorder, _open with { ReadOnly = true }), Chain.Current, "the base after the copy");
        if (!Flavour.KeepTop)
        {
            var emptied = Flavour.TopClosedFirst ? OpenAlone(TopRecorder, _open) : live;
            Step(OpKind.CommitEmpty, ChainFile.Top, () =>
            {
                ImageCommit.EmptyTop(emptied);
                return LastFlush(TopRecorder);
            });
            if (Flavour.TopClosedFirst) Step(OpKind.Close, ChainFile.Top, emptied.Dispose);
        }
        if (Flavour.TopClosedFirst) chain.Dispose();
        else Step(OpKind.Close, ChainFile.Top, live.Dispose);
        if (!Flavour.KeepTop) VerifyEmpty();
        VerifyLive(() => OpenChain(TopRecorder, BaseRecorder, _open with { ReadOnly = true }), Chain.Current, "the chain after the commit");
    }

    /// <summary>A write, write-zeroes, discard or flush on one file, within its first <paramref name="limit"/> bytes.</summary>
    private void Request(DiskImage image, ChainFile file, long limit)
    {
        double p = _rng.NextDouble();
        var kind = p < 0.6 ? OpKind.Write : p < 0.72 ? OpKind.WriteZeroes : p < 0.82 ? OpKind.Discard : OpKind.Flush;
        if (kind == OpKind.Flush)
        {
            Step(kind, file, image.Flush);
            return;
        }
        var (offset, length) = GuestRequests.PickRange(_rng, kind, limit, Cell.ClusterSize);
        Step(kind, file, () => GuestRequests.Run(image, _rng, kind, offset, length, Chain.Current), offset, length);
        int index = Ops[^1].Index;
        Chain.Changed(index, offset, length);
        if (file == ChainFile.Top) return;
        // Before the top holds anything, the chain reads the base.
        Array.Copy(Chain.Current, offset, Base.Current, offset, length);
        Base.Changed(index, offset, length);
    }

    private void Step(OpKind kind, ChainFile file, Action action, long offset = 0, long length = 0) =>
        Step(kind, file, () =>
        {
            action();
            bool durable = kind is OpKind.Flush or OpKind.Close || Cell.Cache.IsWriteThrough();
            return durable ? LastFlush(file == ChainFile.Top ? TopRecorder : BaseRecorder) : 0;
        }, offset, length);

    /// <summary>Runs an operation that returns the tick of the flush that makes it durable, and logs it.</summary>
    private void Step(OpKind kind, ChainFile file, Func<long> action, long offset = 0, long length = 0)
    {
        long start = Clock.Now;
        long durableAt = action();
        Ops.Add(new ChainOp(Ops.Count, kind, file, offset, length, start, Clock.Now, durableAt > start ? durableAt : 0));
    }

    /// <summary>The tick of the recorder's last flush (0 if none).</summary>
    private static long LastFlush(RecordingBlockDevice recorder)
    {
        var records = recorder.Records;
        var times = recorder.RecordTimes;
        for (int i = records.Length - 1; i >= 0; i--)
            if (records[i].Kind == RecordKind.Flush) return times[i];
        return 0;
    }

    private MemoryBlockDevice CreateImage(long size, string? backing)
    {
        var device = new MemoryBlockDevice(0, backing is null ? BaseName : "top.qcow2");
        var options = new Dictionary<string, string>
        {
            ["cluster_size"] = Cell.ClusterSize.ToString(),
            ["lazy_refcounts"] = Cell.LazyRefcounts ? "on" : "off",
            ["refcount_bits"] = Cell.RefcountBits.ToString(),
        };
        if (backing is not null)
        {
            options["backing_file"] = backing;
            options["backing_fmt"] = "qcow2";
        }
        new Qcow2Format().Create(device, new ImageCreateOptions { Size = size, Options = options });
        return device;
    }

    /// <summary>Reads <paramref name="image"/> and notes where it differs from <paramref name="expected"/>.</summary>
    private void VerifyLive(DiskImage image, byte[] expected, string what)
    {
        var back = new byte[Cell.DiskSize];
        if (CrashWorkload.ReadGuest(image, back) is { } problem) LiveProblems.Add($"{what} {problem}");
        else if (!back.AsSpan().SequenceEqual(expected)) LiveProblems.Add($"{what} differs from the model");
    }

    /// <summary>As the other overload, on an image opened for it (closed after).</summary>
    private void VerifyLive(Func<Qcow2Image> open, byte[] expected, string what)
    {
        using var image = open();
        VerifyLive(image, expected, what);
    }

    private void VerifyEmpty()
    {
        using var top = OpenAlone(TopRecorder, _open with { ReadOnly = true });
        if (FirstAllocated(top) is { } at) LiveProblems.Add($"the emptied top still allocates guest offset 0x{at:x}");
    }

    /// <summary>The first guest offset the layer itself allocates (data or zeros), or null.</summary>
    public static long? FirstAllocated(DiskImage layer)
    {
        for (long at = 0; at < layer.Size;)
        {
            var s = layer.GetLayerStatus(at, layer.Size - at);
            if (s.Allocation != LayerAllocation.Unallocated) return at;
            at += s.Length;
        }
        return null;
    }
}
