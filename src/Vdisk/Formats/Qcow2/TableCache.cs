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
    /// <summary>The byte range changed since the table was last written; the rest equals what is on disk.</summary>
    public int DirtyStart { get; set; }
    public int DirtyEnd { get; set; }
}

/// <summary>
/// A bounded write-back cache of cluster-sized tables (L2 tables or refcount blocks), with LRU eviction.
/// Before any dirty table is written back, <c>beforeWriteback</c> runs: that is how the L2 cache makes the
/// refcount blocks its entries depend on reach the disk first. All calls happen under the image's metadata lock.
/// The buffers of evicted tables are used again for later misses, as QEMU's fixed cache does, so that random I/O
/// over a large disk does not turn every miss into a cluster of garbage for the GC (the bulk of a server's
/// memory otherwise). A buffer waits <see cref="RetireDelay"/> further evictions first: an operation may still
/// hold the table it came from for a few steps after it stopped being the most recently used.
/// </summary>
internal sealed class TableCache
{
    private readonly BlockDevice _device;
    private readonly int _tableSize;
    private readonly Dictionary<long, CachedTable> _tables = new();
    private readonly Func<bool, ValueTask>? _beforeWriteback;
    private readonly Action<long, int> _checkWrite;
    private readonly Queue<byte[]> _retired = new();
    private long _clock;
    private int _dirtyCount;

    /// <summary>Granularity of table write-back.</summary>
    private const int WritePage = 4096;

    /// <summary>Evictions a table's buffer waits out before it holds another table.</summary>
    public const int RetireDelay = 8;

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
        var data = NewBuffer();
        try { await _device.ReadCoreAsync(offset, data, async, ct).ConfigureAwait(false); }
        catch
        {
            Retire(data);
            throw;
        }
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
            table = new CachedTable(offset, NewBuffer());
            _tables[offset] = table;
        }
        initial.Span.CopyTo(table.Data);
        table.Data.AsSpan(initial.Length).Clear();
        table.LastUse = ++_clock;
        MarkDirty(table);
        return table;
    }

    /// <summary>Marks the whole table changed (a new table, or one whose bytes do not all match the disk).</summary>
    public void MarkDirty(CachedTable table) => MarkDirty(table, 0, _tableSize);

    /// <summary>Marks <paramref name="length"/> bytes at <paramref name="offset"/> changed: only changed pages are written back.</summary>
    public void MarkDirty(CachedTable table, int offset, int length)
    {
        if (!table.Dirty)
        {
            table.Dirty = true;
            table.DirtyStart = offset;
            table.DirtyEnd = offset + length;
            _dirtyCount++;
            return;
        }
        table.DirtyStart = Math.Min(table.DirtyStart, offset);
        table.DirtyEnd = Math.Max(table.DirtyEnd, offset + length);
    }

    /// <summary>Forgets a table whose cluster was freed, without writing it.</summary>
    public void Remove(long offset)
    {
        if (!_tables.Remove(offset, out var table)) return;
        if (table.Dirty) _dirtyCount--;
        Retire(table.Data);
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
        // Whole pages around the changed bytes: a small write (less to tear, less for fdatasync to carry) that never
        // leaves a partial page for the kernel or O_DIRECT to read back first.
        int start = table.DirtyStart & ~(WritePage - 1);
        int end = Math.Min(_tableSize, (table.DirtyEnd + WritePage - 1) & ~(WritePage - 1));
        await _device.WriteCoreAsync(table.Offset + start, table.Data.AsMemory(start, end - start), async, ct).ConfigureAwait(false);
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
            Retire(victim.Data);
        }
    }

    private void Retire(byte[] buffer)
    {
        // Never more spare buffers than the cache holds tables: the rest goes to the GC.
        if (_retired.Count < Capacity + RetireDelay) _retired.Enqueue(buffer);
    }

    /// <summary>A table buffer: one retired long enough ago, or a new one. Every caller overwrites all of it.</summary>
    private byte[] NewBuffer() => _retired.Count > RetireDelay ? _retired.Dequeue() : new byte[_tableSize];
}
