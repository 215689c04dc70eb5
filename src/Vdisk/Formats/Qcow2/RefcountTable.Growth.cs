using System.Buffers.Binary;
using Vdisk.Formats.Qcow2.OnDisk;

namespace Vdisk.Formats.Qcow2;

/// <summary>New refcount blocks, and growth of the refcount table by relocation.</summary>
internal sealed partial class RefcountTable
{
    /// <summary>Creates the refcount block for table index <paramref name="index"/>, growing the table if it is too short.</summary>
    private async ValueTask CreateBlockAsync(long index, bool async, CancellationToken ct)
    {
        if (index >= _table.Length)
        {
            await GrowTableAsync(index, async, ct).ConfigureAwait(false);
            if (_table[index] != 0) return; // the growth placed a block there
        }
        while (true)
        {
            long cluster = await FindFreeAsync(1, async, ct).ConfigureAwait(false);
            long offset = cluster << _clusterBits;
            long home = cluster >> _blockBits;
            if (home == index)
            {
                // The block describes itself: its own refcount lives inside it.
                var initial = new byte[ClusterSize];
                RefcountBlock.Set(initial, _order, (int)(cluster & ((1L << _blockBits) - 1)), 1);
                _overlap.AddCluster(offset, MetadataKind.RefcountBlock);
                await Blocks.CreateAsync(offset, initial, async, ct).ConfigureAwait(false);
                _table[index] = offset;
                break;
            }
            if (home >= _table.Length || _table[home] == 0)
            {
                // The free cluster's own refcount block is missing too: make that one first, then look again.
                await CreateBlockAsync(home, async, ct).ConfigureAwait(false);
                if (_table[index] != 0) return;
                continue;
            }
            await UpdateAsync(cluster, 1, async, ct).ConfigureAwait(false);
            _overlap.AddCluster(offset, MetadataKind.RefcountBlock);
            await Blocks.CreateAsync(offset, ReadOnlyMemory<byte>.Empty, async, ct).ConfigureAwait(false);
            _table[index] = offset;
            break;
        }
        _dirtyEntries.Add((int)index);
    }

    /// <summary>
    /// Moves the refcount table to a larger area past everything it covers today, together with new refcount
    /// blocks that describe the new area itself. Order on disk: existing dirty blocks; the new blocks and table;
    /// barrier; the header switch (one write of offset and size); barrier; only then the old table is freed.
    /// </summary>
    private async ValueTask GrowTableAsync(long neededIndex, bool async, CancellationToken ct)
    {
        await WriteBackAsync(async, ct).ConfigureAwait(false);
        long entriesPerCluster = ClusterSize / 8;
        long covered = (long)_table.Length << _blockBits;
        long fileClusters = (_device.GetLength() + ClusterSize - 1) >> _clusterBits;
        long start = Math.Max(covered, fileClusters);
        long wantedEntries = Math.Max(neededIndex + 1, _table.Length + (_table.Length + 1) / 2);

        long tableClusters, blockCount;
        while (true)
        {
            tableClusters = (wantedEntries + entriesPerCluster - 1) / entriesPerCluster;
            // Blocks for every table index that the new area [start, start + table + blocks) touches.
            blockCount = 1;
            while (true)
            {
                long last = start + tableClusters + blockCount - 1;
                long needed = (last >> _blockBits) - (start >> _blockBits) + 1;
                if (needed <= blockCount) break;
                blockCount = needed;
            }
            long lastIndex = (start + tableClusters + blockCount - 1) >> _blockBits;
            if (lastIndex < wantedEntries && neededIndex < wantedEntries) break;
            wantedEntries = Math.Max(lastIndex + 1, wantedEntries) + entriesPerCluster;
        }
        if (tableClusters * ClusterSize > Qcow2Header.MaxRefcountTableBytes)
            throw new Images.DiskImageException(Images.DiskImageErrorKind.Io, _path, "Refcount table would exceed its maximum size (image too large)");

        long newEntries = tableClusters * entriesPerCluster;
        var newTable = new long[newEntries];
        Array.Copy(_table, newTable, _table.Length);
        long blocksStart = start + tableClusters;
        long firstIndex = start >> _blockBits;
        var blocks = new byte[blockCount * ClusterSize];
        for (long i = 0; i < blockCount; i++) newTable[firstIndex + i] = (blocksStart + i) << _clusterBits;
        for (long c = start; c < blocksStart + blockCount; c++)
        {
            long blockIndex = (c >> _blockBits) - firstIndex;
            RefcountBlock.Set(blocks.AsSpan((int)(blockIndex * ClusterSize), ClusterSize), _order, (int)(c & ((1L << _blockBits) - 1)), 1);
        }
        var tableBytes = new byte[tableClusters * ClusterSize];
        for (long i = 0; i < newEntries; i++) BinaryPrimitives.WriteUInt64BigEndian(tableBytes.AsSpan((int)(i * 8)), (ulong)newTable[i]);

        foreach (var kind in new[] { MetadataKind.RefcountTable })
        {
            var hit = _overlap.FindOverlap(start << _clusterBits, (tableClusters + blockCount) << _clusterBits, kind);
            if (hit != MetadataKind.None)
                throw new Images.CorruptImageException(_path, $"Preventing invalid write on metadata (overlaps with {OverlapChecker.Describe(hit)})", start << _clusterBits);
        }
        await _device.WriteCoreAsync(blocksStart << _clusterBits, blocks, async, ct).ConfigureAwait(false);
        await _device.WriteCoreAsync(start << _clusterBits, tableBytes, async, ct).ConfigureAwait(false);
        await _device.FlushCoreAsync(async, ct).ConfigureAwait(false);
        await _switchTable(start << _clusterBits, (uint)tableClusters, async).ConfigureAwait(false);
        await _device.FlushCoreAsync(async, ct).ConfigureAwait(false);

        long oldOffset = TableOffset;
        long oldClusters = TableClusters;
        _table = newTable;
        TableOffset = start << _clusterBits;
        TableClusters = (uint)tableClusters;
        _overlap.SetRange(MetadataKind.RefcountTable, TableOffset, tableClusters << _clusterBits);
        for (long i = 0; i < blockCount; i++) _overlap.AddCluster((blocksStart + i) << _clusterBits, MetadataKind.RefcountBlock);
        for (long c = oldOffset >> _clusterBits; c < (oldOffset >> _clusterBits) + oldClusters; c++)
            await UpdateAsync(c, -1, async, ct).ConfigureAwait(false);
    }
}
