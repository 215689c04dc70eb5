using Vdisk.BlockIO;

namespace Vdisk.Formats.Qcow2;

/// <summary>One cluster-sized metadata table held in a <see cref="TableCache"/>; its bytes are the on-disk (big-endian) form.</summary>
internal sealed class CachedTable
{
    public CachedTable(long offset, byte[] data)
    {
        Offset = offset;
        Data = data;
    }

    public long Offset { get; }
    public byte[] Data { get; }
    public bool Dirty { get; set; }
    public long LastUse { get; set; }
}

/// <summary>
/// A bounded write-back cache of cluster-sized tables (L2 tables or refcount blocks), with LRU eviction.
/// Before any dirty table is written back, <c>beforeWriteback</c> runs: that is how the L2 cache makes the
/// refcount blocks its entries depend on reach the disk first. All calls happen under the image's metadata lock.
/// </summary>
internal sealed class TableCache
{
    private readonly BlockDevice _device;
    private readonly int _tableSize;
    private readonly Dictionary<long, CachedTable> _tables = new();
    private readonly Func<bool, ValueTask>? _beforeWriteback;
    private readonly Action<long, int> _checkWrite;
    private long _clock;
    private int _dirtyCount;

    public TableCache(BlockDevice device, int tableSize, int capacity, Func<bool, ValueTask>? beforeWriteback, Action<long, int> checkWrite)
    {
        _device = device;
        _tableSize = tableSize;
        Capacity = Math.Max(capacity, 4); // an operation may hold a few tables at once
        _beforeWriteback = beforeWriteback;
        _checkWrite = checkWrite;
    }

    public int Capacity { get; }
    public bool HasDirty => _dirtyCount > 0;
    public long Hits { get; private set; }
    public long Misses { get; private set; }

    /// <summary>The table at offset, read from disk on a miss.</summary>
    public async ValueTask<CachedTable> GetAsync(long offset, bool async, CancellationToken ct)
    {
        if (_tables.TryGetValue(offset, out var table))
        {
            Hits++;
            table.LastUse = ++_clock;
            return table;
        }
        Misses++;
        await MakeRoomAsync(async, ct).ConfigureAwait(false);
        var data = new byte[_tableSize];
        await _device.ReadCoreAsync(offset, data, async, ct).ConfigureAwait(false);
        table = new CachedTable(offset, data) { LastUse = ++_clock };
        _tables[offset] = table;
        return table;
    }

    /// <summary>A new table at offset, filled from <paramref name="initial"/> or zeros, dirty; nothing is read.</summary>
    public async ValueTask<CachedTable> CreateAsync(long offset, ReadOnlyMemory<byte> initial, bool async, CancellationToken ct)
    {
        if (!_tables.TryGetValue(offset, out var table))
        {
            await MakeRoomAsync(async, ct).ConfigureAwait(false);
            table = new CachedTable(offset, new byte[_tableSize]);
            _tables[offset] = table;
        }
        initial.Span.CopyTo(table.Data);
        table.Data.AsSpan(initial.Length).Clear();
        table.LastUse = ++_clock;
        MarkDirty(table);
        return table;
    }

    public void MarkDirty(CachedTable table)
    {
        if (table.Dirty) return;
        table.Dirty = true;
        _dirtyCount++;
    }

    /// <summary>Forgets a table whose cluster was freed, without writing it.</summary>
    public void Remove(long offset)
    {
        if (_tables.Remove(offset, out var table) && table.Dirty) _dirtyCount--;
    }

    /// <summary>Forgets every table without writing any (their structure is being replaced).</summary>
    public void DropAll()
    {
        _tables.Clear();
        _dirtyCount = 0;
    }

    /// <summary>Writes every dirty table, in offset order. Durability is the caller's flush.</summary>
    public async ValueTask WriteBackAsync(bool async, CancellationToken ct)
    {
        if (_dirtyCount == 0) return;
        if (_beforeWriteback is not null) await _beforeWriteback(async).ConfigureAwait(false);
        foreach (var table in _tables.Values.Where(t => t.Dirty).OrderBy(t => t.Offset).ToList())
            await WriteOneAsync(table, async, ct).ConfigureAwait(false);
    }

    private async ValueTask WriteOneAsync(CachedTable table, bool async, CancellationToken ct)
    {
        _checkWrite(table.Offset, _tableSize);
        await _device.WriteCoreAsync(table.Offset, table.Data, async, ct).ConfigureAwait(false);
        table.Dirty = false;
        _dirtyCount--;
    }

    private async ValueTask MakeRoomAsync(bool async, CancellationToken ct)
    {
        while (_tables.Count >= Capacity)
        {
            CachedTable? victim = null;
            foreach (var t in _tables.Values)
                if (victim is null || t.LastUse < victim.LastUse) victim = t;
            if (victim!.Dirty)
            {
                if (_beforeWriteback is not null) await _beforeWriteback(async).ConfigureAwait(false);
                await WriteOneAsync(victim, async, ct).ConfigureAwait(false);
            }
            _tables.Remove(victim.Offset);
        }
    }
}
