using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2.OnDisk;

namespace Vdisk.Formats.Qcow2;

/// <summary>
/// preallocation=metadata|falloc|full: every guest cluster gets its host cluster, as QEMU lays it out. Only the
/// host cluster is assigned; what the cluster reads stays as it was. With extended L2 entries the subcluster bitmap
/// is kept (0 for a new cluster: its subclusters stay unallocated and read from the backing file, or as zeros),
/// and without them a zero cluster keeps its zero flag.
/// </summary>
public sealed partial class Qcow2Image
{
    /// <summary>
    /// Gives every guest cluster from the one holding <paramref name="from"/> on that has none a host cluster.
    /// <paramref name="zeroedData"/> (falloc or full only): the new clusters are marked allocated and their host
    /// space is zeroed, so they read as zeros whatever the backing file holds.
    /// </summary>
    internal void Preallocate(string mode, long from = 0, bool zeroedData = false)
    {
        long oldFileLength = Device.Length;
        if (!_extended && (from & (ClusterSize - 1)) != 0) AllocateHead(from);
        long clusters = (Size + ClusterSize - 1) >> _clusterBits;
        long fromCluster = from >> _clusterBits;
        long lastData = 0;
        // Runs of contiguous data clusters: metadata allocated on the way (L2 tables, refcount blocks) lies between them.
        var runs = new List<(long Start, long Length)>();
        _lock.Wait();
        try
        {
            for (long c = fromCluster; c < clusters; c++)
            {
                var existing = LookupAsync(c, false, default).GetAwaiter().GetResult();
                var kind = existing.Kind(_extended);
                if (kind is ClusterKind.Normal or ClusterKind.Compressed or ClusterKind.ZeroAllocated) continue;
                var l2 = GetWritableL2Async(c >> _l2Bits, false, default).GetAwaiter().GetResult();
                long host = _refcounts.AllocateAsync(1, false).GetAwaiter().GetResult();
                ulong zero = kind == ClusterKind.ZeroPlain && !zeroedData ? Entry.ZeroFlag : 0;
                ulong bitmap = zeroedData ? Entry.AllAllocatedBitmap : existing.Bitmap;
                WriteEntry(l2, c & (L2Entries - 1), (ulong)host | Entry.Copied | zero, _extended ? bitmap : 0);
                if (runs.Count > 0 && runs[^1].Start + runs[^1].Length == host) runs[^1] = (runs[^1].Start, runs[^1].Length + ClusterSize);
                else runs.Add((host, ClusterSize));
                lastData = Math.Max(lastData, host + ClusterSize);
            }
            // A cluster used before may hold old data (fallocate keeps it): zeroed before the entries that call it
            // allocated can reach the disk. Space past the old end of the file reads as zeros already.
            if (zeroedData)
                foreach (var (start, length) in runs)
                    if (start < oldFileLength) Device.WriteZeroes(start, Math.Min(length, oldFileLength - start));
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

    /// <summary>
    /// A grow from inside a cluster that has no host cluster: without subclusters the whole cluster would read from
    /// its new host cluster, so its head [cluster start, <paramref name="from"/>) is written first with what it reads
    /// now (the backing file's data, or zeros), as QEMU's copy-on-write does when it preallocates that cluster.
    /// </summary>
    private void AllocateHead(long from)
    {
        long clusterStart = from & ~(long)(ClusterSize - 1);
        L2Entry entry;
        _lock.Wait();
        try { entry = LookupAsync(clusterStart >> _clusterBits, false, default).GetAwaiter().GetResult(); }
        finally { _lock.Release(); }
        if (entry.Kind(_extended) is not (ClusterKind.Unallocated or ClusterKind.ZeroPlain)) return;
        var head = new byte[from - clusterStart];
        ReadCoreAsync(clusterStart, head, false, default).GetAwaiter().GetResult();
        WriteClusterAsync(clusterStart, head, false, default).GetAwaiter().GetResult();
    }
}
