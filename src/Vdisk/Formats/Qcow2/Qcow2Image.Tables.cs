using System.Buffers.Binary;
using Vdisk.Formats.Qcow2.OnDisk;

namespace Vdisk.Formats.Qcow2;

/// <summary>Making an L2 table writable: allocating it, or copying one shared with a snapshot.</summary>
public sealed partial class Qcow2Image
{
    /// <summary>The L2 table for an L1 index, owned by the active L1 alone (created or copied as needed). Caller holds the lock.</summary>
    private async ValueTask<CachedTable> GetWritableL2Async(long l1Index, bool async, CancellationToken ct)
    {
        // Every L2 change goes through here: with lazy refcounts, the image is dirty before the first one.
        if (_lazyRefcounts) await MarkDirtyAsync(async, ct).ConfigureAwait(false);
        long entry = _l1[l1Index];
        long oldOffset = entry & (long)Entry.L1OffsetMask;
        if (oldOffset != 0 && (entry & unchecked((long)Entry.Copied)) != 0)
            return (await GetL2TableAsync(l1Index, async, ct).ConfigureAwait(false))!;

        long newOffset = await _refcounts.AllocateAsync(1, async, ct).ConfigureAwait(false);
        byte[]? copy = null;
        if (oldOffset != 0)
        {
            // The table is shared with a snapshot: this copy adds a reference to every cluster it maps.
            var shared = (await GetL2TableAsync(l1Index, async, ct).ConfigureAwait(false))!;
            copy = (byte[])shared.Data.Clone();
            for (long i = 0; i < L2Entries; i++)
            {
                var e = ReadEntry(shared, i);
                switch (e.Kind(_extended))
                {
                    case ClusterKind.Normal or ClusterKind.ZeroAllocated:
                        await _refcounts.UpdateAsync(e.HostOffset >> _clusterBits, 1, async, ct).ConfigureAwait(false);
                        break;
                    case ClusterKind.Compressed:
                        var (off, sectors) = e.CompressedExtent(_clusterBits);
                        for (long c = off >> _clusterBits; c <= ((off & ~511L) + sectors * 512L - 1) >> _clusterBits; c++)
                            await _refcounts.UpdateAsync(c, 1, async, ct).ConfigureAwait(false);
                        break;
                }
                // Entries of a copied table are shared: none is COPIED until it is written again.
                BinaryPrimitives.WriteUInt64BigEndian(copy.AsSpan((int)(i * _header.L2EntrySize)), e.Raw & ~Entry.Copied);
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
}
