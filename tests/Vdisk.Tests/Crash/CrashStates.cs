using Vdisk.BlockIO;

namespace Vdisk.Tests.Crash;

/// <summary>How the records after the durable prefix land.</summary>
public enum CrashVariant
{
    /// <summary>A random half of them, multi-sector writes torn at 512 B half of the time.</summary>
    Subset,
    /// <summary>As <see cref="Subset"/>, then the file cut back to its length at the last flush.</summary>
    SubsetTruncated,
    /// <summary>Every write to a metadata cluster lands, no data write does.</summary>
    MetadataOnly,
    /// <summary>Every data write lands, no metadata write does.</summary>
    DataOnly,
    /// <summary>Every record up to the cut lands.</summary>
    Everything,
}

/// <summary>
/// A crash at record <see cref="Cut"/>: the flushes before it are durable, so every record up to the last of them
/// (<see cref="Prefix"/> records) lands, and of the records between that flush and the cut, some do.
/// </summary>
public sealed record CrashState(int Prefix, int Cut, CrashVariant Variant, int Seed)
{
    public override string ToString() => $"prefix {Prefix}, cut {Cut}, {Variant}, seed {Seed}";
}

/// <summary>Chooses crash states in a workload's log and builds the devices they leave.</summary>
public static class CrashStates
{
    public static List<CrashState> Choose(IReadOnlyList<DeviceRecord> records, int count, Random rng)
    {
        var states = new List<CrashState>();
        for (int i = 0; i < count; i++)
        {
            int cut = 1 + rng.Next(records.Count);
            states.Add(At(records, cut, PickVariant(rng), rng.Next()));
        }
        states.Sort((a, b) => a.Prefix.CompareTo(b.Prefix));
        return states;
    }

    /// <summary>The state of a crash after the first <paramref name="cut"/> records: durable up to the last flush among them.</summary>
    public static CrashState At(IReadOnlyList<DeviceRecord> records, int cut, CrashVariant variant, int seed)
    {
        int lastFlush = cut - 1;
        while (lastFlush >= 0 && records[lastFlush].Kind != RecordKind.Flush) lastFlush--;
        return new CrashState(lastFlush + 1, cut, variant, seed);
    }

    public static CrashVariant PickVariant(Random rng)
    {
        double v = rng.NextDouble();
        return v < 0.4 ? CrashVariant.Subset : v < 0.6 ? CrashVariant.SubsetTruncated
            : v < 0.8 ? CrashVariant.MetadataOnly : v < 0.9 ? CrashVariant.DataOnly : CrashVariant.Everything;
    }

    /// <summary>The device a state leaves, from a device holding the log's initial state plus the prefix.</summary>
    public static MemoryBlockDevice Build(IReadOnlyList<DeviceRecord> records, CrashState state, MemoryBlockDevice prefixDevice, QcowLayout metadata)
    {
        var rng = new Random(state.Seed);
        var device = prefixDevice.Clone();
        long lengthAtFlush = device.GetLength();
        for (int i = state.Prefix; i < state.Cut; i++)
        {
            var r = records[i];
            bool isMetadata = r.Kind == RecordKind.SetLength || (r.Kind == RecordKind.Write && metadata.TouchesMetadata(r.Offset, r.Length));
            switch (state.Variant)
            {
                case CrashVariant.Everything:
                case CrashVariant.MetadataOnly when isMetadata:
                case CrashVariant.DataOnly when !isMetadata:
                    r.ApplyTo(device);
                    break;
                case CrashVariant.Subset:
                case CrashVariant.SubsetTruncated:
                    if (rng.Next(2) == 0) break;
                    if (r.Length > DeviceRecord.SectorSize && rng.Next(2) == 0)
                    {
                        foreach (var piece in r.SplitIntoSectors())
                            if (rng.Next(2) == 0) piece.ApplyTo(device);
                    }
                    else r.ApplyTo(device);
                    break;
            }
        }
        if (state.Variant == CrashVariant.SubsetTruncated && device.GetLength() > lengthAtFlush) device.SetLength(lengthAtFlush);
        return device;
    }

    /// <summary>The last guest operation whose durability the state guarantees, or -1 (only the empty image).</summary>
    public static int DurableOp(CrashWorkload w, CrashState state)
    {
        int found = -1;
        foreach (var op in w.Ops)
        {
            if (op.StartLog >= state.Prefix) break;
            // Its last device flush is in the prefix: the operation, and everything before it, is durable.
            if (op.Durable && op.LastFlushRecord < state.Prefix && op.LastFlushRecord >= op.StartLog) found = op.Index;
        }
        return found;
    }

    /// <summary>The operations the crash may have cut short: some of their records are past the durable prefix.</summary>
    public static List<OpInfo> InterruptedOps(CrashWorkload w, CrashState state) =>
        w.Ops.Where(o => o.StartLog < state.Cut && o.EndLog > state.Prefix).ToList();

    /// <summary>The sizes the guest may have: as of the durable operation first, then any later one had by the cut.</summary>
    public static List<long> AllowedSizes(CrashWorkload w, CrashState state, int durableOp, int lastOp)
    {
        var sizes = new List<long> { durableOp < 0 ? w.Cell.DiskSize : w.Ops[durableOp].SizeAfter };
        for (int i = durableOp + 1; i <= lastOp; i++)
            if (!sizes.Contains(w.Ops[i].SizeAfter)) sizes.Add(w.Ops[i].SizeAfter);
        return sizes;
    }

    /// <summary>The last guest operation that had started by the cut: later ones cannot have reached the file.</summary>
    public static int LastStartedOp(CrashWorkload w, CrashState state)
    {
        int found = -1;
        foreach (var op in w.Ops)
        {
            if (op.StartLog >= state.Cut) break;
            found = op.Index;
        }
        return found;
    }
}
