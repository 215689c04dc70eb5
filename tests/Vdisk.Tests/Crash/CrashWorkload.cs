using System.Collections.Immutable;
using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;

namespace Vdisk.Tests.Crash;

/// <summary>One configuration of the campaign matrix.</summary>
public sealed record CrashCell(int ClusterSize, bool LazyRefcounts, CacheMode Cache, int RefcountBits = 16, long DiskSize = 16 << 20, int Operations = 110)
{
    public override string ToString() =>
        $"{(ClusterSize >= 1024 ? $"{ClusterSize >> 10}K" : $"{ClusterSize}B")}{(RefcountBits != 16 ? $"/rc{RefcountBits}" : "")} lazy={(LazyRefcounts ? "on" : "off")} {Cache.ToQemuName()}";
}

/// <summary>The workloads' operations; the two steps of a commit are the commit workload's.</summary>
public enum OpKind { Write, WriteZeroes, Discard, Flush, Check, Close, SnapshotCreate, SnapshotApply, SnapshotDelete, Resize, CommitCopy, CommitEmpty }

/// <summary>
/// A guest operation and where its device requests sit in the log: records [StartLog, EndLog). <see cref="Durable"/>
/// says whether everything before it is durable once it returns; <see cref="LastFlushRecord"/> is then the device
/// flush that made it so, which a crash state must include for the guarantee to hold.
/// </summary>
public sealed record OpInfo(int Index, OpKind Kind, long Offset, long Length, int StartLog, int EndLog, bool Durable)
{
    public int LastFlushRecord { get; set; } = -1;
    /// <summary>The guest disk size once the operation has returned.</summary>
    public long SizeAfter { get; init; }
    public bool IsSnapshotOp => Kind is OpKind.SnapshotCreate or OpKind.SnapshotApply or OpKind.SnapshotDelete;
}

/// <summary>
/// A seeded random workload on a qcow2 image over a recording device: writes of 512 B to 256 KiB at sector-aligned,
/// cluster-aligned and unaligned offsets, write-zeroes (with and without unmap), discards, flushes and a mid-run
/// <c>check -r all</c>, internal snapshots (create, apply, delete) and resizes, then a clean close. The model
/// follows every operation; it spans the disk's first size, which later sizes may exceed but no write does.
/// </summary>
public sealed partial class CrashWorkload
{
    private CrashWorkload(CrashCell cell, int seed, SectorModel model)
    {
        Cell = cell;
        Seed = seed;
        Model = model;
    }

    public CrashCell Cell { get; }
    public int Seed { get; }
    public SectorModel Model { get; }
    public List<OpInfo> Ops { get; } = new();
    public ImmutableArray<DeviceRecord> Records { get; private set; }
    public RecordingBlockDevice Recorder { get; private set; } = null!;
    /// <summary>The image file after the clean close.</summary>
    public MemoryBlockDevice Final { get; private set; } = null!;
    public long InitialRefcountTableOffset { get; private set; }
    /// <summary>Problems seen on the live image (a mid-run check that was not clean, a read-back that differed).</summary>
    public List<string> LiveProblems { get; } = new();

    /// <summary>Whether the refcount table moved during the run (a shrink or an apply may leave less in use at the end).</summary>
    public bool RefcountTableGrew { get; private set; }

    public static MemoryBlockDevice CreateImage(CrashCell cell)
    {
        var device = new MemoryBlockDevice(0, $"crash-{cell.ClusterSize}.qcow2");
        new Qcow2Format().Create(device, new ImageCreateOptions
        {
            Size = cell.DiskSize,
            Options = new Dictionary<string, string>
            {
                ["cluster_size"] = cell.ClusterSize.ToString(),
                ["lazy_refcounts"] = cell.LazyRefcounts ? "on" : "off",
                ["refcount_bits"] = cell.RefcountBits.ToString(),
            },
        });
        return device;
    }

    public static CrashWorkload Run(CrashCell cell, int seed)
    {
        var rng = new Random(seed);
        var w = new CrashWorkload(cell, seed, new SectorModel(cell.DiskSize)) { CurrentSize = cell.DiskSize };
        var file = CreateImage(cell);
        w.InitialRefcountTableOffset = QcowLayout.Read(file).RefcountTableOffset;
        w.Recorder = new RecordingBlockDevice(file, leaveInnerOpen: true);
        var options = new Dictionary<string, string>();
        // Every other run keeps the caches small, so that L2 tables and refcount blocks are evicted mid-run.
        if (seed % 2 == 1) options["l2-cache-size"] = (4 * cell.ClusterSize).ToString();
        var image = Qcow2Image.Open(w.Recorder, new ImageOpenOptions { Cache = cell.Cache, Options = options });
        bool writeThrough = cell.Cache.IsWriteThrough();
        int checkAt = cell.Operations / 2;
        for (int i = 0; i < cell.Operations; i++)
        {
            double p = rng.NextDouble();
            var kind = i == checkAt ? OpKind.Check
                : w.ScheduledOp(i) is { } scheduled ? scheduled
                : p < 0.55 ? OpKind.Write : p < 0.67 ? OpKind.WriteZeroes : p < 0.78 ? OpKind.Discard : p < 0.95 ? OpKind.Flush
                : p < 0.97 ? OpKind.SnapshotCreate : p < 0.98 ? OpKind.SnapshotDelete : p < 0.99 ? OpKind.SnapshotApply : OpKind.Resize;
            w.Step(image, rng, kind, writeThrough);
        }
        w.Verify(image, "before close");
        w.Step(image, rng, OpKind.Close, writeThrough);
        w.Records = w.Recorder.Records;
        w.Final = file;
        int lastFlush = -1, op = 0;
        for (int r = 0; r <= w.Records.Length; r++)
        {
            while (op < w.Ops.Count && w.Ops[op].EndLog == r) w.Ops[op++].LastFlushRecord = lastFlush;
            if (r < w.Records.Length && w.Records[r].Kind == RecordKind.Flush) lastFlush = r;
        }
        return w;
    }

    private void Step(Qcow2Image image, Random rng, OpKind kind, bool writeThrough)
    {
        int index = Ops.Count;
        int start = Recorder.Records.Length;
        var (offset, length) = kind is OpKind.Write or OpKind.WriteZeroes or OpKind.Discard ? PickRange(rng, kind) : (0L, 0L);
        switch (kind)
        {
            case OpKind.Write or OpKind.WriteZeroes or OpKind.Discard:
                GuestRequests.Run(image, rng, kind, offset, length, Model.Current);
                break;
            case OpKind.Flush:
                image.Flush();
                break;
            case OpKind.Check:
                var r = image.Check(CheckRepair.All);
                if (!r.IsClean || r.CorruptionsFixed != 0 || r.LeaksFixed != 0)
                    LiveProblems.Add($"mid-run check -r all on the live image: {r.Corruptions} corruptions, {r.Leaks} leaks, fixed {r.CorruptionsFixed}/{r.LeaksFixed}: {string.Join("; ", r.Messages.Take(3))}");
                break;
            case OpKind.Close:
                image.Dispose();
                break;
            default:
                // Snapshot operations and resizes flush before they return: they are durability points.
                kind = SnapshotOrResize(image, rng, kind, index);
                break;
        }
        if (length > 0) Model.Changed(index, offset, length);
        bool durable = kind is OpKind.Flush or OpKind.Check or OpKind.Close or OpKind.Resize or OpKind.SnapshotCreate or OpKind.SnapshotApply or OpKind.SnapshotDelete || writeThrough;
        Ops.Add(new OpInfo(index, kind, offset, length, start, Recorder.Records.Length, durable) { SizeAfter = CurrentSize });
        if (!RefcountTableGrew && kind != OpKind.Close)
        {
            var field = new byte[8];
            Recorder.Read(48, field.AsMemory());
            RefcountTableGrew = System.Buffers.Binary.BinaryPrimitives.ReadInt64BigEndian(field) != InitialRefcountTableOffset;
        }
    }

    private (long Offset, long Length) PickRange(Random rng, OpKind kind) =>
        GuestRequests.PickRange(rng, kind, Math.Min(Cell.DiskSize, CurrentSize), Cell.ClusterSize);

    private void Verify(Qcow2Image image, string when)
    {
        if (image.Size != CurrentSize) LiveProblems.Add($"live image has size {image.Size}, the model {CurrentSize}, {when}");
        var back = new byte[Model.DiskSize];
        if (ReadGuest(image, back) is { } problem) LiveProblems.Add($"live image {problem} {when}");
        else if (!back.AsSpan().SequenceEqual(Model.Current)) LiveProblems.Add($"live image differs from the model {when}");
    }
}
