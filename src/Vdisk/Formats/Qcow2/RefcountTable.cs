using System.Buffers.Binary;
using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2.OnDisk;
using Vdisk.Images;

namespace Vdisk.Formats.Qcow2;

/// <summary>
/// Host cluster management: the refcount table (always in memory), refcount blocks (through a cache), cluster
/// allocation, and frees that wait until the L2 update that dropped the reference is durable.
/// All calls happen under the image's metadata lock.
/// </summary>
internal sealed partial class RefcountTable
{
    private readonly BlockDevice _device;
    private readonly int _clusterBits;
    private readonly int _order;
    private readonly int _blockBits; // log2(refcount entries per block)
    private readonly OverlapChecker _overlap;
    private readonly string _path;
    private readonly Func<long, uint, bool, ValueTask> _switchTable;
    private readonly Func<string, long, CorruptImageException> _corruption;
    private long[] _table;
    private readonly SortedSet<int> _dirtyEntries = new();
    private long _freeHint;
    // Clusters whose last reference is being dropped: their decrement waits for a durable L2 update.
    private readonly List<(long Offset, long Length, bool Discard)> _pendingFrees = new();

    /// <param name="corruption">Marks the image corrupt and returns the exception to throw (the image's SignalCorruption).</param>
    public RefcountTable(BlockDevice device, Qcow2Header header, long[] table, OverlapChecker overlap, int cacheTables,
        Func<long, uint, bool, ValueTask> switchTable, Func<string, long, CorruptImageException>? corruption = null)
    {
        _device = device;
        _clusterBits = header.ClusterBits;
        _order = header.RefcountOrder;
        _blockBits = _clusterBits + 3 - _order;
        _overlap = overlap;
        _path = device.Name;
        _table = table;
        TableOffset = header.RefcountTableOffset;
        TableClusters = header.RefcountTableClusters;
        _switchTable = switchTable;
        _corruption = corruption ?? ((problem, offset) => new CorruptImageException(_path, problem, offset));
        Blocks = new TableCache(device, 1 << _clusterBits, cacheTables, null, CheckBlockWrite);
        for (int i = 0; i < table.Length; i++)
            if (table[i] != 0 && IsValidBlockOffset(table[i])) overlap.AddCluster(table[i], MetadataKind.RefcountBlock);
    }

    public TableCache Blocks { get; }
    /// <summary>Called when a cluster's refcount drops to zero, so that callers holding on to it let go.</summary>
    public Action<long>? ClusterFreed { get; set; }
    public int EntryCount => _table.Length;
    public long BlockOffset(int index) => _table[index];
    public int Order => _order;
    public long TableOffset { get; private set; }
    public uint TableClusters { get; private set; }
    public ulong MaxRefcount => RefcountBlock.MaxValue(_order);
    public bool HasDirty => Blocks.HasDirty || _dirtyEntries.Count > 0;
    public bool HasPendingFrees => _pendingFrees.Count > 0;
    private int ClusterSize => 1 << _clusterBits;

    /// <summary>
    /// Reads the refcount table from disk. Entries are checked when a refcount block is used, not here: like QEMU,
    /// an image with a damaged refcount table still opens, reads, and can be converted; only allocation fails.
    /// </summary>
    public static async ValueTask<long[]> LoadTableAsync(BlockDevice device, Qcow2Header header, bool async)
    {
        int entries = (int)(header.RefcountTableClusters * (long)header.ClusterSize / 8);
        var raw = new byte[entries * 8];
        await device.ReadCoreAsync(header.RefcountTableOffset, raw, async, default).ConfigureAwait(false);
        var table = new long[entries];
        for (int i = 0; i < entries; i++)
        {
            table[i] = (long)BinaryPrimitives.ReadUInt64BigEndian(raw.AsSpan(i * 8));
        }
        return table;
    }

    public async ValueTask<ulong> GetAsync(long cluster, bool async, CancellationToken ct = default)
    {
        long index = cluster >> _blockBits;
        if (index >= _table.Length || _table[index] == 0) return 0;
        var block = await Blocks.GetAsync(BlockOffset(index), async, ct).ConfigureAwait(false);
        return RefcountBlock.Get(block.Data, _order, (int)(cluster & ((1L << _blockBits) - 1)));
    }

    private bool IsValidBlockOffset(long offset) => (offset & (ClusterSize - 1)) == 0 && offset > 0;

    /// <summary>The refcount block offset of a table index, refusing (and marking corrupt) one that cannot be a block.</summary>
    private long BlockOffset(long index)
    {
        long offset = _table[index];
        if (!IsValidBlockOffset(offset))
            throw _corruption($"Refblock offset 0x{offset:x} unaligned (reftable index: 0x{index:x})", TableOffset + index * 8);
        return offset;
    }

    /// <summary>Adds <paramref name="delta"/> to the refcount of one host cluster, creating its refcount block if needed.</summary>
    public async ValueTask UpdateAsync(long cluster, long delta, bool async, CancellationToken ct = default)
    {
        var block = await BlockForUpdateAsync(cluster >> _blockBits, cluster, delta, async, ct).ConfigureAwait(false);
        Apply(block, cluster, delta);
    }

    /// <summary>
    /// Adds <paramref name="delta"/> to the refcounts of the clusters, in order, looking each
    /// refcount block up once per run of clusters it covers (a whole L2 table's worth at a time, for snapshots).
    /// </summary>
    public async ValueTask UpdateManyAsync(List<long> clusters, long delta, bool async, CancellationToken ct = default)
    {
        int count = clusters.Count;
        for (int i = 0; i < count;)
        {
            long index = clusters[i] >> _blockBits;
            var block = await BlockForUpdateAsync(index, clusters[i], delta, async, ct).ConfigureAwait(false);
            for (; i < count && clusters[i] >> _blockBits == index; i++) Apply(block, clusters[i], delta);
        }
    }

    /// <summary>The refcounts of the clusters into <paramref name="values"/>, one block lookup per run.</summary>
    public async ValueTask GetManyAsync(List<long> clusters, ulong[] values, bool async, CancellationToken ct = default)
    {
        int count = clusters.Count;
        for (int i = 0; i < count;)
        {
            long index = clusters[i] >> _blockBits;
            if (index >= _table.Length || _table[index] == 0)
            {
                for (; i < count && clusters[i] >> _blockBits == index; i++) values[i] = 0;
                continue;
            }
            var block = await Blocks.GetAsync(BlockOffset(index), async, ct).ConfigureAwait(false);
            for (; i < count && clusters[i] >> _blockBits == index; i++)
                values[i] = RefcountBlock.Get(block.Data, _order, (int)(clusters[i] & ((1L << _blockBits) - 1)));
        }
    }

    private async ValueTask<CachedTable> BlockForUpdateAsync(long index, long cluster, long delta, bool async, CancellationToken ct)
    {
        if (index >= _table.Length || _table[index] == 0)
        {
            if (delta < 0) throw new CorruptImageException(_path, $"Refcount of cluster {cluster} would drop below zero", cluster << _clusterBits);
            await CreateBlockAsync(index, async, ct).ConfigureAwait(false);
        }
        return await Blocks.GetAsync(BlockOffset(index), async, ct).ConfigureAwait(false);
    }

    private void Apply(CachedTable block, long cluster, long delta)
    {
        int slot = (int)(cluster & ((1L << _blockBits) - 1));
        ulong old = RefcountBlock.Get(block.Data, _order, slot);
        ulong updated = delta >= 0 ? old + (ulong)delta : old - (ulong)(-delta);
        if (delta < 0 && (ulong)(-delta) > old)
            throw new CorruptImageException(_path, $"Refcount of cluster {cluster} would drop below zero", cluster << _clusterBits);
        if (delta > 0 && (updated > MaxRefcount || updated < old))
            throw new DiskImageException(DiskImageErrorKind.InvalidArgument, _path,
                $"Refcount of cluster {cluster} would exceed {MaxRefcount}; use qemu-img amend to increase the refcount entry width");
        RefcountBlock.Set(block.Data, _order, slot, updated);
        // The bytes of this entry (entries narrower than a byte share one).
        int at = _order >= 3 ? slot << (_order - 3) : slot >> (3 - _order);
        Blocks.MarkDirty(block, at, _order >= 3 ? 1 << (_order - 3) : 1);
        if (updated == 0)
        {
            if (cluster < _freeHint) _freeHint = cluster;
            ClusterFreed?.Invoke(cluster);
        }
    }

    /// <summary>Allocates <paramref name="count"/> contiguous free clusters, with refcount 1, and returns the first offset.</summary>
    public async ValueTask<long> AllocateAsync(int count, bool async, CancellationToken ct = default)
    {
        while (true)
        {
            long start = await FindFreeAsync(count, async, ct).ConfigureAwait(false);
            // Refcount blocks for the run come first; creating one may take a cluster of the run, then search again.
            for (long c = start; c < start + count; c++)
                await EnsureBlockAsync(c, async, ct).ConfigureAwait(false);
            bool taken = false;
            for (long c = start; c < start + count && !taken; c++)
                taken = await GetAsync(c, async, ct).ConfigureAwait(false) != 0;
            if (taken) continue;
            for (long c = start; c < start + count; c++)
                await UpdateAsync(c, 1, async, ct).ConfigureAwait(false);
            _freeHint = start + count;
            return start << _clusterBits;
        }
    }

    private async ValueTask EnsureBlockAsync(long cluster, bool async, CancellationToken ct)
    {
        long index = cluster >> _blockBits;
        if (index >= _table.Length || _table[index] == 0) await CreateBlockAsync(index, async, ct).ConfigureAwait(false);
    }

    /// <summary>The first run of <paramref name="count"/> free clusters at or after the hint, searched a block at a time.</summary>
    private async ValueTask<long> FindFreeAsync(int count, bool async, CancellationToken ct)
    {
        int entries = 1 << _blockBits;
        long run = 0, runStart = 0;
        for (long c = Math.Max(_freeHint, 1); ; )
        {
            long index = c >> _blockBits;
            long blockStart = index << _blockBits;
            if (index >= _table.Length || _table[index] == 0)
            {
                // A whole uncovered block is free: no need to walk it cluster by cluster.
                if (run == 0) runStart = c;
                run += blockStart + entries - c;
                if (run >= count) return runStart;
                c = blockStart + entries;
                continue;
            }
            var data = (await Blocks.GetAsync(BlockOffset(index), async, ct).ConfigureAwait(false)).Data;
            int slot = (int)(c - blockStart);
            while (slot < entries)
            {
                if (run == 0)
                {
                    int free = RefcountBlock.IndexOf(data, _order, slot, zero: true);
                    if (free < 0) break;
                    slot = free;
                    runStart = blockStart + free;
                }
                int used = RefcountBlock.IndexOf(data, _order, slot, zero: false);
                int end = used < 0 ? entries : used;
                run += end - slot;
                if (run >= count) return runStart;
                if (used < 0) break; // the run may go on in the next block
                run = 0;
                slot = used;
            }
            c = blockStart + entries;
        }
    }

    /// <summary>Drops one reference to a host range once the L2 update that removed it is durable.</summary>
    public void QueueFree(long offset, long length, bool discard) => _pendingFrees.Add((offset, length, discard));

    /// <summary>Applies the queued frees; call only after the L2 tables that dropped the references were flushed.</summary>
    public async ValueTask ApplyPendingFreesAsync(bool async, CancellationToken ct)
    {
        if (_pendingFrees.Count == 0) return;
        var frees = _pendingFrees.ToArray();
        _pendingFrees.Clear();
        foreach (var (offset, length, discard) in frees)
        {
            long first = offset >> _clusterBits, last = (offset + length - 1) >> _clusterBits;
            for (long c = first; c <= last; c++)
            {
                await UpdateAsync(c, -1, async, ct).ConfigureAwait(false);
                if (discard && await GetAsync(c, async, ct).ConfigureAwait(false) == 0)
                    await _device.DiscardCoreAsync(c << _clusterBits, ClusterSize, async, ct).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Writes dirty refcount blocks, then (after a barrier) the refcount table entries that point to new blocks.</summary>
    public async ValueTask WriteBackAsync(bool async, CancellationToken ct)
    {
        await Blocks.WriteBackAsync(async, ct).ConfigureAwait(false);
        if (_dirtyEntries.Count == 0) return;
        await _device.FlushCoreAsync(async, ct).ConfigureAwait(false);
        var raw = new byte[8];
        foreach (int i in _dirtyEntries)
        {
            BinaryPrimitives.WriteUInt64BigEndian(raw, (ulong)_table[i]);
            await _device.WriteCoreAsync(TableOffset + i * 8L, raw, async, ct).ConfigureAwait(false);
        }
        _dirtyEntries.Clear();
    }

    private void CheckBlockWrite(long offset, int length)
    {
        var kind = _overlap.FindOverlap(offset, length, MetadataKind.RefcountBlock);
        if (kind != MetadataKind.None)
            throw _corruption($"Preventing invalid write on metadata (overlaps with {OverlapChecker.Describe(kind)})", offset);
    }
}
