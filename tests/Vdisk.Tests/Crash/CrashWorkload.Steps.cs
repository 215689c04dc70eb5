using Vdisk.Formats.Qcow2;
using Vdisk.Images;

namespace Vdisk.Tests.Crash;

/// <summary>
/// The workload's snapshot and resize steps. The model spans the first disk size M: a shrink zeroes what it
/// cuts off (a later grow must read zeros there), an apply makes the model the snapshot's content and size, and
/// a grow past M (which moves the L1 table) adds space that no write touches and must read as zeros.
/// </summary>
public sealed partial class CrashWorkload
{
    private const int MaxSnapshots = 3;
    private const int MaxL1Grows = 2;
    private readonly List<(string Name, byte[] Content, long Size)> _snapshots = new();
    private int _snapshotNames, _l1Grows;

    /// <summary>The guest disk size after the last operation.</summary>
    public long CurrentSize { get; private set; }
    /// <summary>Grows that had to move the L1 table.</summary>
    public int L1Grows => _l1Grows;

    /// <summary>Every workload runs each kind at least once, spread over the run.</summary>
    private OpKind? ScheduledOp(int i)
    {
        int n = Cell.Operations;
        if (i == n / 8 || i == n * 5 / 8) return OpKind.SnapshotCreate;
        if (i == n / 4 || i == n * 3 / 8 || i == n * 3 / 4) return OpKind.Resize;
        if (i == n * 7 / 16 || i == n * 13 / 16) return OpKind.SnapshotApply;
        if (i == n * 7 / 8) return OpKind.SnapshotDelete;
        return null;
    }

    /// <summary>Runs a snapshot or resize step; returns the kind it ran (an apply or delete with no snapshot creates one).</summary>
    private OpKind SnapshotOrResize(Qcow2Image image, Random rng, OpKind kind, int index)
    {
        if (kind is OpKind.SnapshotApply or OpKind.SnapshotDelete && _snapshots.Count == 0) kind = OpKind.SnapshotCreate;
        if (kind == OpKind.SnapshotCreate && _snapshots.Count >= MaxSnapshots) kind = OpKind.SnapshotDelete;
        switch (kind)
        {
            case OpKind.SnapshotCreate:
                string name = $"s{++_snapshotNames}";
                image.CreateSnapshot(name);
                _snapshots.Add((name, (byte[])Model.Current.Clone(), CurrentSize));
                break;
            case OpKind.SnapshotDelete:
                int victim = rng.Next(_snapshots.Count);
                image.DeleteSnapshot(_snapshots[victim].Name);
                _snapshots.RemoveAt(victim);
                break;
            case OpKind.SnapshotApply:
                var sn = _snapshots[rng.Next(_snapshots.Count)];
                image.ApplySnapshot(sn.Name);
                Model.Replace(index, sn.Content);
                CurrentSize = sn.Size;
                break;
            case OpKind.Resize:
                long size = PickSize(rng);
                image.Resize(size);
                if (size < Model.DiskSize && size < CurrentSize)
                {
                    long end = Math.Min(CurrentSize, Model.DiskSize);
                    Array.Clear(Model.Current, (int)size, (int)(end - size));
                    Model.Changed(index, size, end - size);
                }
                CurrentSize = size;
                break;
        }
        return kind;
    }

    /// <summary>
    /// Shrinks to between M/2 and the current size (cluster-aligned or not), grows back within M, or grows past
    /// what the L1 table maps so that it must move.
    /// </summary>
    private long PickSize(Random rng)
    {
        long m = Model.DiskSize, cluster = Cell.ClusterSize;
        double p = rng.NextDouble();
        if (CurrentSize > m || (CurrentSize > m / 2 && p < 0.45))
        {
            long low = m / 2, high = Math.Min(CurrentSize, m) - 512;
            long size = low + (long)(rng.NextDouble() * (high - low));
            return rng.Next(3) == 0 ? Math.Max(cluster, size - size % cluster) : size - size % 512;
        }
        if (_l1Grows < MaxL1Grows && p < 0.8)
        {
            _l1Grows++;
            // Past every entry the L1 table has now: the header on disk is current, since the last resize flushed it.
            long perEntry = cluster * (cluster / 8);
            long mapped = QcowLayout.Read(Recorder).L2Tables.Length * perEntry;
            return Math.Max(mapped, CurrentSize) + 512 * (1 + rng.Next(64));
        }
        long grow = CurrentSize + (long)(rng.NextDouble() * (m - CurrentSize));
        return Math.Max(CurrentSize + 512, grow - grow % 512);
    }

    /// <summary>
    /// Reads the guest disk into <paramref name="disk"/> (the model's span; zeros past the image's end). Space past
    /// the model must read as zeros: its first and last clusters are read. Returns the problem, if any.
    /// </summary>
    public static string? ReadGuest(DiskImage image, byte[] disk)
    {
        long inModel = Math.Min(image.Size, disk.Length);
        image.Read(0, disk.AsMemory(0, (int)inModel));
        Array.Clear(disk, (int)inModel, (int)(disk.Length - inModel));
        if (image.Size <= disk.Length) return null;
        var tail = new byte[Math.Min(256 << 10, image.Size - disk.Length)];
        foreach (long at in new[] { disk.Length, image.Size - tail.Length })
        {
            image.Read(at, tail.AsMemory());
            if (tail.AsSpan().ContainsAnyExcept((byte)0)) return $"reads nonzero data past the model at 0x{at:x} (size {image.Size})";
        }
        return null;
    }
}
