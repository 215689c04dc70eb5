using System.Buffers.Binary;
using Vdisk.Formats.Qcow2.OnDisk;

namespace Vdisk.Formats.Qcow2;

/// <summary>
/// Rebuilding the refcount structure from counted references, when the one on disk cannot be trusted. The new
/// table and blocks go past the end of the file; they are written and flushed before the header switches to
/// them in one 12-byte write. The old table and blocks are simply no longer referenced: free space.
/// </summary>
public sealed partial class Qcow2Image
{
    private async ValueTask RebuildRefcountStructureAsync(CheckScan scan, bool async, CancellationToken ct)
    {
        var (offset, clusters, table) = await WriteRefcountStructureAsync(scan, _refcounts.Order, async, ct).ConfigureAwait(false);
        await SwitchRefcountTableAsync(offset, clusters, async).ConfigureAwait(false);
        await Device.FlushCoreAsync(async, ct).ConfigureAwait(false);
        AdoptRefcountStructure(offset, clusters, table);
    }

    /// <summary>
    /// Writes (and flushes) a complete refcount structure of entry width 2^<paramref name="order"/> past the end
    /// of the file for the counted references; nothing points at it yet. The old structure's clusters are not counted.
    /// </summary>
    private async ValueTask<(long Offset, uint Clusters, long[] Table)> WriteRefcountStructureAsync(CheckScan scan, int order, bool async, CancellationToken ct)
    {
        var counts = scan.Counts;
        foreach (long c in scan.OldRefcountStructure)
            if (counts[c] > 0) counts[c] -= 1;
        _refcounts.Blocks.DropAll();

        int blockBits = _clusterBits + 3 - order;
        long entriesPerCluster = ClusterSize / 8;
        long start = Math.Max(counts.Highest() + 1, (Device.Length + ClusterSize - 1) >> _clusterBits);
        long tableClusters = 1, blocks = 1;
        while (true)
        {
            long end = start + tableClusters + blocks;
            long neededBlocks = ((end - 1) >> blockBits) + 1;
            long neededTable = (neededBlocks + entriesPerCluster - 1) / entriesPerCluster;
            if (neededBlocks <= blocks && neededTable <= tableClusters) break;
            blocks = Math.Max(blocks, neededBlocks);
            tableClusters = Math.Max(tableClusters, neededTable);
        }
        if (tableClusters * ClusterSize > Qcow2Header.MaxRefcountTableBytes)
            throw new Images.DiskImageException(Images.DiskImageErrorKind.Io, Path, "Cannot rebuild the refcount structure: the table would be too large");
        long blocksStart = start + tableClusters;
        for (long c = start; c < blocksStart + blocks; c++) counts[c] = 1;

        var table = new long[tableClusters * entriesPerCluster];
        var blockBytes = new byte[ClusterSize];
        for (long b = 0; b < blocks; b++)
        {
            Array.Clear(blockBytes);
            for (int slot = 0; slot < 1 << blockBits; slot++)
            {
                ulong v = counts[(b << blockBits) + slot];
                if (v != 0) RefcountBlock.Set(blockBytes, order, slot, Math.Min(v, RefcountBlock.MaxValue(order)));
            }
            table[b] = (blocksStart + b) << _clusterBits;
            await Device.WriteCoreAsync(table[b], blockBytes, async, ct).ConfigureAwait(false);
        }
        var tableBytes = new byte[tableClusters * ClusterSize];
        for (int i = 0; i < table.Length; i++) BinaryPrimitives.WriteUInt64BigEndian(tableBytes.AsSpan(i * 8), (ulong)table[i]);
        await Device.WriteCoreAsync(start << _clusterBits, tableBytes, async, ct).ConfigureAwait(false);
        await Device.FlushCoreAsync(async, ct).ConfigureAwait(false);
        return (start << _clusterBits, (uint)tableClusters, table);
    }

    /// <summary>The header now points at the new structure: the open image follows it (width from the header).</summary>
    private void AdoptRefcountStructure(long offset, uint tableClusters, long[] table)
    {
        for (int i = 0; i < _refcounts.EntryCount; i++)
            if (_refcounts.BlockOffset(i) != 0) _overlap.RemoveCluster(_refcounts.BlockOffset(i));
        _overlap.SetRange(MetadataKind.RefcountTable, offset, (long)tableClusters << _clusterBits);
        _refcounts = new RefcountTable(Device, _header, table, _overlap, _refcounts.Blocks.Capacity, SwitchRefcountTableAsync) { ClusterFreed = OnClusterFreed };
        _compressedNext = 0;
    }
}
