using System.Buffers.Binary;
using Vdisk.Formats.Qcow2.OnDisk;
using Vdisk.Images;

namespace Vdisk.Formats.Qcow2;

/// <summary>Making an L2 table writable (allocating it, or copying one shared with a snapshot), and moving the L1 table.</summary>
public sealed partial class Qcow2Image
{
    /// <summary>The L2 table for an L1 index, owned by the active L1 alone (created or copied as needed). Caller holds the lock.</summary>
    private async ValueTask<CachedTable> GetWritableL2Async(long l1Index, bool async, CancellationToken ct)
    {
        // Every L2 change goes through here: with lazy refcounts, the image is dirty before the first one.
        if (_lazyRefcounts) await MarkDirtyAsync(async, ct).ConfigureAwait(false);
        // Only VM state lies past the L1 table: it grows the way QEMU grows it, by half again.
        if (l1Index >= _l1.Length)
            await ReplaceL1Async(Math.Max(l1Index + 1, _l1.Length + _l1.Length / 2), Size, async, ct).ConfigureAwait(false);
        long entry = _l1[l1Index];
        long oldOffset = entry & (long)Entry.L1OffsetMask;
        if (oldOffset != 0 && (entry & unchecked((long)Entry.Copied)) != 0)
            return (await GetL2TableAsync(l1Index, async, ct).ConfigureAwait(false))!;

        long newOffset = await _refcounts.AllocateAsync(1, async, ct).ConfigureAwait(false);
        byte[]? copy = null;
        if (oldOffset != 0)
        {
            // The table is shared with a snapshot. Refcounts count references per L1 tree, so the clusters it maps
            // keep theirs: the snapshot's tree reaches them through the old table, the active one through the copy.
            var shared = (await GetL2TableAsync(l1Index, async, ct).ConfigureAwait(false))!;
            copy = (byte[])shared.Data.Clone();
            for (long i = 0; i < L2Entries; i++)
            {
                var span = copy.AsSpan((int)(i * _header.L2EntrySize));
                // Entries of a copied table are shared: none is COPIED until it is written again.
                BinaryPrimitives.WriteUInt64BigEndian(span, BinaryPrimitives.ReadUInt64BigEndian(span) & ~Entry.Copied);
            }
            _refcounts.QueueFree(oldOffset, ClusterSize, discard: false);
            _overlap.RemoveCluster(oldOffset);
        }
        _overlap.AddCluster(newOffset, MetadataKind.ActiveL2);
        var table = await _l2Cache.CreateAsync(newOffset, copy ?? ReadOnlyMemory<byte>.Empty, async, ct).ConfigureAwait(false);
        _l1[l1Index] = newOffset | unchecked((long)Entry.Copied);
        _dirtyL1.Add((int)l1Index);
        return table;
    }

    /// <summary>
    /// Moves the active L1 table to new clusters with <paramref name="entries"/> entries (the first ones kept,
    /// the rest empty) and switches the header to it together with the virtual size <paramref name="size"/>.
    /// Order: everything the old table points to is made durable, the new table written and flushed, then
    /// one 24-byte header write (size, crypt method, L1 size, L1 offset, all in sector 0), flushed, and only
    /// then is the old table freed. A crash leaves the old table and size, or the new ones. Caller holds the lock.
    /// </summary>
    private async ValueTask ReplaceL1Async(long entries, long size, bool async, CancellationToken ct, long[]? content = null)
    {
        if (entries * 8 > Qcow2Header.MaxL1Bytes || entries > int.MaxValue)
            throw new DiskImageException(DiskImageErrorKind.InvalidArgument, Path, "Active L1 table too large");
        await FlushMetadataLockedAsync(async, ct).ConfigureAwait(false);
        var source = content ?? _l1;
        var l1 = new long[entries];
        Array.Copy(source, l1, Math.Min(source.Length, entries));
        long bytes = entries * 8;
        int clusters = (int)Math.Max(1, (bytes + ClusterSize - 1) >> _clusterBits);
        long offset = await _refcounts.AllocateAsync(clusters, async, ct).ConfigureAwait(false);
        var raw = new byte[(long)clusters << _clusterBits];
        for (int i = 0; i < l1.Length; i++) BinaryPrimitives.WriteUInt64BigEndian(raw.AsSpan(i * 8), (ulong)l1[i]);
        CheckDataWrite(offset, raw.Length);
        await Device.WriteCoreAsync(offset, raw, async, ct).ConfigureAwait(false);
        // The new table's own refcount must be durable before the header points to it.
        await _refcounts.WriteBackAsync(async, ct).ConfigureAwait(false);
        await Device.FlushCoreAsync(async, ct).ConfigureAwait(false);

        var header = new byte[HeaderField.L1TableOffset + 8 - HeaderField.Size];
        BinaryPrimitives.WriteUInt64BigEndian(header, (ulong)size);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(HeaderField.CryptMethod - HeaderField.Size), _header.CryptMethod);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(HeaderField.L1Size - HeaderField.Size), (uint)entries);
        BinaryPrimitives.WriteUInt64BigEndian(header.AsSpan(HeaderField.L1TableOffset - HeaderField.Size), (ulong)offset);
        await Device.WriteCoreAsync(HeaderField.Size, header, async, ct).ConfigureAwait(false);
        await Device.FlushCoreAsync(async, ct).ConfigureAwait(false);

        long oldOffset = _header.L1TableOffset;
        long oldBytes = _header.L1Size * 8L;
        _l1 = l1;
        _dirtyL1.Clear();
        _header.L1TableOffset = offset;
        _header.L1Size = (uint)entries;
        _header.Size = size;
        Size = size;
        _overlap.SetRange(MetadataKind.ActiveL1, offset, bytes);
        await FreeNowAsync(oldOffset, oldBytes, async, ct).ConfigureAwait(false);
    }

    /// <summary>Writes only the virtual size field and makes it durable. Caller holds the lock.</summary>
    private async ValueTask WriteSizeAsync(long size, bool async, CancellationToken ct)
    {
        var raw = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(raw, (ulong)size);
        await Device.WriteCoreAsync(HeaderField.Size, raw, async, ct).ConfigureAwait(false);
        await Device.FlushCoreAsync(async, ct).ConfigureAwait(false);
        _header.Size = size;
        Size = size;
    }
}
