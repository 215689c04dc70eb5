using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2.OnDisk;

namespace Vdisk.Formats.Qcow2;

/// <summary>preallocation=metadata|falloc|full: every guest cluster gets its host cluster at creation.</summary>
public sealed partial class Qcow2Image
{
    /// <summary>Gives every guest cluster from <paramref name="fromCluster"/> on that has none a host cluster.</summary>
    internal void Preallocate(string mode, long fromCluster = 0)
    {
        long clusters = (Size + ClusterSize - 1) >> _clusterBits;
        long lastData = 0;
        // Runs of contiguous data clusters: metadata allocated on the way (L2 tables, refcount blocks) lies between them.
        var runs = new List<(long Start, long Length)>();
        _lock.Wait();
        try
        {
            for (long c = fromCluster; c < clusters; c++)
            {
                var existing = LookupAsync(c, false, default).GetAwaiter().GetResult();
                if (existing.Kind(_extended) is ClusterKind.Normal or ClusterKind.Compressed or ClusterKind.ZeroAllocated) continue;
                var l2 = GetWritableL2Async(c >> _l2Bits, false, default).GetAwaiter().GetResult();
                long host = _refcounts.AllocateAsync(1, false).GetAwaiter().GetResult();
                WriteEntry(l2, c & (L2Entries - 1), (ulong)host | Entry.Copied, _extended ? Entry.AllAllocatedBitmap : 0);
                if (runs.Count > 0 && runs[^1].Start + runs[^1].Length == host) runs[^1] = (runs[^1].Start, runs[^1].Length + ClusterSize);
                else runs.Add((host, ClusterSize));
                lastData = Math.Max(lastData, host + ClusterSize);
            }
            FlushMetadataLockedAsync(false, default).GetAwaiter().GetResult();
        }
        finally { _lock.Release(); }
        if (clusters <= fromCluster || runs.Count == 0) return;
        switch (mode)
        {
            case "metadata":
                // The file must reach the last data cluster so that every mapped offset lies inside it.
                if (Device.Length < lastData) Device.SetLength(lastData);
                break;
            case "falloc":
                foreach (var (start, length) in runs) Device.Allocate(start, length);
                break;
            case "full":
                foreach (var (start, length) in runs) Formats.Raw.RawFormat.WriteZeros(Device, start, length);
                break;
        }
        Device.Flush();
    }
}
