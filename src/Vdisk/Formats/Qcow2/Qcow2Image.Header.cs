using Vdisk.Formats.Qcow2.OnDisk;
using Vdisk.Images;

namespace Vdisk.Formats.Qcow2;

/// <summary>
/// Rewriting the header area (cluster 0) as a whole: fields, extensions and the backing file name. Used by
/// rebase, commit and amend. Unknown extensions and fields past the known ones are kept as they were.
/// </summary>
public sealed partial class Qcow2Image
{
    /// <summary>
    /// Applies <paramref name="change"/> to a copy of the header, writes the whole header cluster and flushes;
    /// only then does the open image take the change. Refused (nothing written) when the new header area no
    /// longer fits in cluster 0.
    /// </summary>
    public void UpdateHeader(Action<Qcow2Header> change) => UpdateHeaderAsync(change, false, default).GetAwaiter().GetResult();
    public ValueTask UpdateHeaderAsync(Action<Qcow2Header> change, CancellationToken ct = default) => UpdateHeaderAsync(change, true, ct);

    private async ValueTask UpdateHeaderAsync(Action<Qcow2Header> change, bool async, CancellationToken ct)
    {
        if (IsReadOnly) throw new DiskImageException(DiskImageErrorKind.ReadOnly, Path, "Block node is read-only");
        ThrowIfCorrupt();
        await LockAsync(async, ct).ConfigureAwait(false);
        try
        {
            // Metadata the new header may point at (tables, refcounts) must be durable before the header is.
            await FlushMetadataLockedAsync(async, ct).ConfigureAwait(false);
            await Device.FlushCoreAsync(async, ct).ConfigureAwait(false);
            var candidate = Copy(_header);
            change(candidate);
            var area = SerializeFitting(candidate);
            await Device.WriteCoreAsync(0, area, async, ct).ConfigureAwait(false);
            await Device.FlushCoreAsync(async, ct).ConfigureAwait(false);
            change(_header);
            // Serialize recomputes the offsets of the name; keep the live header in step with the disk.
            _header.BackingFileOffset = candidate.BackingFileOffset;
            _header.BackingFileSize = candidate.BackingFileSize;
            _header.HeaderLength = candidate.HeaderLength;
        }
        finally { Unlock(); }
    }

    private byte[] SerializeFitting(Qcow2Header header)
    {
        if (header.BackingFile is { Length: > Qcow2Header.MaxBackingFileNameLength })
            throw new DiskImageException(DiskImageErrorKind.InvalidArgument, Path, "Backing file name too long");
        var bytes = header.Serialize();
        if (bytes.Length > ClusterSize)
            throw new DiskImageException(DiskImageErrorKind.InvalidArgument, Path, "No space left on device");
        // The whole cluster is written: stale bytes of a longer old header must not survive past the new end.
        var area = new byte[(int)Math.Min(ClusterSize, Math.Max(Device.Length, bytes.Length))];
        bytes.CopyTo(area, 0);
        return area;
    }

    private static Qcow2Header Copy(Qcow2Header h)
    {
        var copy = new Qcow2Header
        {
            Version = h.Version, BackingFileOffset = h.BackingFileOffset, BackingFileSize = h.BackingFileSize,
            ClusterBits = h.ClusterBits, Size = h.Size, CryptMethod = h.CryptMethod, L1Size = h.L1Size,
            L1TableOffset = h.L1TableOffset, RefcountTableOffset = h.RefcountTableOffset,
            RefcountTableClusters = h.RefcountTableClusters, SnapshotCount = h.SnapshotCount,
            SnapshotsOffset = h.SnapshotsOffset, Incompatible = h.Incompatible, Compatible = h.Compatible,
            Autoclear = h.Autoclear, RefcountOrder = h.RefcountOrder, HeaderLength = h.HeaderLength,
            CompressionType = h.CompressionType, UnknownFields = h.UnknownFields.ToArray(), BackingFile = h.BackingFile,
        };
        copy.Extensions.AddRange(h.Extensions);
        return copy;
    }

    /// <summary>
    /// Makes every cluster of the active image unallocated (QEMU's bdrv_make_empty, as qemu-img commit leaves the
    /// top image): reads then fall through to the backing file.
    /// </summary>
    public void MakeEmpty() => MakeEmptyAsync(false, default).GetAwaiter().GetResult();

    private async ValueTask MakeEmptyAsync(bool async, CancellationToken ct)
    {
        if (IsReadOnly) throw new DiskImageException(DiskImageErrorKind.ReadOnly, Path, "Block node is read-only");
        ThrowIfCorrupt();
        long clusters = (Size + ClusterSize - 1) >> _clusterBits;
        for (long c = 0; c < clusters; c++)
        {
            if ((c & (L2Entries - 1)) == 0 && _l1[c >> _l2Bits] == 0) { c += L2Entries - 1; continue; }
            await ChangeEntryAsync(c, async, ct, old =>
            {
                var kind = old.Kind(_extended);
                return (0, 0, kind is ClusterKind.Normal or ClusterKind.ZeroAllocated or ClusterKind.Compressed);
            }, discardFreed: true).ConfigureAwait(false);
        }
        await FlushCoreAsync(async, ct).ConfigureAwait(false);
    }
}
