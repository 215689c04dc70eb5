using Vdisk.Images;

namespace Vdisk.Tests.Crash;

/// <summary>The workloads' random guest requests: where they land, and running one while a model follows it.</summary>
public static class GuestRequests
{
    /// <summary>
    /// Sizes log-uniform from 512 B to 256 KiB within the first <paramref name="disk"/> bytes; offsets often in a hot
    /// region so that clusters are rewritten; a discard, and 30% of the rest, covers whole clusters.
    /// </summary>
    public static (long Offset, long Length) PickRange(Random rng, OpKind kind, long disk, int clusterSize)
    {
        long length = (long)Math.Round(Math.Pow(2, 9 + rng.NextDouble() * 9));
        long region = rng.Next(3) == 0 ? disk : disk / 4;
        long offset = (long)(rng.NextDouble() * region);
        double a = rng.NextDouble();
        if (kind == OpKind.Discard || a < 0.3)
        {
            // Cluster-aligned, whole clusters: what changes L2 entries and frees clusters.
            offset -= offset % clusterSize;
            length = Math.Max(clusterSize, length - length % clusterSize);
        }
        else if (a < 0.8)
        {
            offset -= offset % SectorModel.SectorSize;
            length = Math.Max(SectorModel.SectorSize, length - length % SectorModel.SectorSize);
        }
        length = Math.Min(length, disk - offset);
        return (offset, length);
    }

    /// <summary>
    /// Runs a write (random data), write-zeroes (with or without unmap) or discard on <paramref name="image"/>, and
    /// makes <paramref name="disk"/> (the guest disk as the model has it) follow.
    /// </summary>
    public static void Run(DiskImage image, Random rng, OpKind kind, long offset, long length, byte[] disk)
    {
        switch (kind)
        {
            case OpKind.Write:
                var data = new byte[length];
                rng.NextBytes(data);
                image.Write(offset, data.AsSpan());
                data.CopyTo(disk, (int)offset);
                break;
            case OpKind.WriteZeroes:
                image.WriteZeroes(offset, length, mayUnmap: rng.Next(2) == 0);
                Array.Clear(disk, (int)offset, (int)length);
                break;
            case OpKind.Discard:
                image.Discard(offset, length);
                // What a discard leaves is the driver's choice; it is whatever reads back right after it.
                image.Read(offset, disk.AsMemory((int)offset, (int)length));
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(kind), kind, "not a guest request");
        }
    }
}
