using System.Buffers.Binary;
using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2.OnDisk;
using Vdisk.Images;

namespace Vdisk.Formats.Qcow2;

/// <summary>
/// The snapshot table: read with every size bounded before it drives a read, and rewritten whole into new
/// clusters (it moves whenever it changes), switched to with one header write, the old clusters freed after.
/// </summary>
public sealed partial class Qcow2Image
{
    private SnapshotEntry? _viewedSnapshot;

    public override IReadOnlyList<SnapshotInfo> Snapshots =>
        _snapshots.Select(s => new SnapshotInfo(s.Id, s.Name, s.VmStateSize, s.DateSeconds, s.DateNanoseconds,
            s.VmClockNanoseconds, s.Icount, s.DiskSize)).ToList();

    /// <summary>Reads the snapshot table. A check open tolerates a broken table (check reports it itself).</summary>
    private static (List<SnapshotEntry> List, long Bytes) LoadSnapshotTable(BlockDevice device, Qcow2Header header, bool forCheck)
    {
        var list = new List<SnapshotEntry>();
        long consumed = 0;
        if (header.SnapshotCount == 0) return (list, 0);
        try
        {
            long pos = header.SnapshotsOffset;
            var buffer = new byte[64 * 1024];
            int have = 0;
            for (int i = 0; i < header.SnapshotCount; i++)
            {
                while (true)
                {
                    var parsed = SnapshotEntry.TryParse(buffer.AsSpan(0, have), i, header.Size, device.Name);
                    if (parsed is { } p)
                    {
                        list.Add(p.Entry);
                        consumed += p.Length;
                        int used = Math.Min(p.Length, have);
                        Array.Copy(buffer, used, buffer, 0, have - used);
                        have -= used;
                        pos += p.Length - used;
                        break;
                    }
                    if (consumed + have >= Qcow2Header.MaxSnapshotTableBytes)
                        throw new DiskImageException(DiskImageErrorKind.CorruptImage, device.Name, "Snapshot table is too big");
                    if (pos >= device.Length)
                        throw new DiskImageException(DiskImageErrorKind.CorruptImage, device.Name, $"Snapshot table entry {i} lies past the end of the file");
                    int n = (int)Math.Min(buffer.Length - have, device.Length - pos);
                    device.Read(pos, buffer.AsMemory(have, n));
                    pos += n;
                    have += n;
                }
            }
            if (consumed > Qcow2Header.MaxSnapshotTableBytes)
                throw new DiskImageException(DiskImageErrorKind.CorruptImage, device.Name, "Snapshot table is too big");
        }
        catch (DiskImageException) when (forCheck)
        {
            return (new List<SnapshotEntry>(), 0);
        }
        return (list, consumed);
    }

    /// <summary>By ID first, then by name, as QEMU looks snapshots up.</summary>
    private static SnapshotEntry? FindSnapshot(IReadOnlyList<SnapshotEntry> list, string idOrName) =>
        list.FirstOrDefault(s => s.Id == idOrName) ?? list.FirstOrDefault(s => s.Name == idOrName);

    /// <summary>A snapshot's L1 table must be a sane size, aligned, inside the file, and cover its disk.</summary>
    private static void ValidateSnapshotL1(SnapshotEntry s, Qcow2Header header, long fileLength, string path)
    {
        if (s.L1Size > Qcow2Header.MaxL1Bytes / 8)
            throw new DiskImageException(DiskImageErrorKind.CorruptImage, path, "Snapshot L1 table too large");
        if ((s.L1TableOffset & (header.ClusterSize - 1)) != 0 || s.L1TableOffset < 0 || s.L1TableOffset + s.L1Size * 8L > fileLength)
            throw new DiskImageException(DiskImageErrorKind.CorruptImage, path, "Snapshot L1 table offset invalid");
        if (header.L1EntriesFor(s.DiskSize) > s.L1Size)
            throw new DiskImageException(DiskImageErrorKind.CorruptImage, path, "Snapshot L1 table is too small for its disk size");
    }

    // The table's length on disk: entries written by others may be laid out differently from ours.
    private long _snapshotTableBytes;

    private void UpdateSnapshotOverlapRanges()
    {
        if (_viewedSnapshot is not null) return;
        _overlap.SetRange(MetadataKind.SnapshotTable, _header.SnapshotsOffset, _snapshots.Count == 0 ? 0 : _snapshotTableBytes);
        _overlap.SetRanges(MetadataKind.InactiveL1, _snapshots.Select(s => (s.L1TableOffset, s.L1Size * 8L)));
    }

    /// <summary>
    /// Writes <paramref name="entries"/> as the new snapshot table: new clusters, written and flushed, then the
    /// header's nb_snapshots and snapshots_offset in one 12-byte write, flushed, then the old table freed.
    /// Caller holds the lock and has made everything the new entries point to durable.
    /// </summary>
    private async ValueTask WriteSnapshotTableAsync(List<SnapshotEntry> entries, bool async, CancellationToken ct)
    {
        var bytes = SnapshotEntry.SerializeTable(entries);
        if (bytes.Length > Qcow2Header.MaxSnapshotTableBytes)
            throw new DiskImageException(DiskImageErrorKind.InvalidArgument, Path, "Snapshot table is too big");
        long offset = 0;
        if (entries.Count > 0)
        {
            int clusters = (int)((bytes.Length + ClusterSize - 1) >> _clusterBits);
            offset = await _refcounts.AllocateAsync(clusters, async, ct).ConfigureAwait(false);
            var padded = new byte[(long)clusters << _clusterBits];
            bytes.CopyTo(padded, 0);
            CheckDataWrite(offset, padded.Length);
            await Device.WriteCoreAsync(offset, padded, async, ct).ConfigureAwait(false);
        }
        await _refcounts.WriteBackAsync(async, ct).ConfigureAwait(false);
        await Device.FlushCoreAsync(async, ct).ConfigureAwait(false);

        var header = new byte[12];
        BinaryPrimitives.WriteUInt32BigEndian(header, (uint)entries.Count);
        BinaryPrimitives.WriteUInt64BigEndian(header.AsSpan(4), (ulong)offset);
        await Device.WriteCoreAsync(HeaderField.NbSnapshots, header, async, ct).ConfigureAwait(false);
        await Device.FlushCoreAsync(async, ct).ConfigureAwait(false);

        long oldOffset = _header.SnapshotsOffset, oldBytes = _snapshots.Count == 0 ? 0 : _snapshotTableBytes;
        _header.SnapshotCount = (uint)entries.Count;
        _header.SnapshotsOffset = offset;
        _snapshots = entries;
        _snapshotTableBytes = bytes.Length;
        UpdateSnapshotOverlapRanges();
        await FreeNowAsync(oldOffset, oldBytes, async, ct).ConfigureAwait(false);
    }
}
