using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Xunit;

namespace Vdisk.Tests.Formats.Qcow2;

/// <summary>LRU eviction, dirty write-back, and the write-back dependency (refcounts before L2 tables).</summary>
public class TableCacheTests
{
    private const int Table = 512;
    private readonly MemoryBlockDevice _device = new(64 * Table);
    private readonly List<string> _events = new();

    private TableCache NewCache(int capacity = 4) => new(_device, Table, capacity,
        async => { _events.Add("before"); return ValueTask.CompletedTask; },
        (offset, length) => _events.Add($"check {offset} {length}"));

    private static byte[] Filled(byte b) => Enumerable.Repeat(b, Table).ToArray();

    [Fact]
    public async Task LeastRecentlyUsedTableIsEvicted()
    {
        for (int i = 0; i < 4; i++) _device.Write(i * Table, Filled((byte)(i + 1)).AsSpan());
        var cache = NewCache();
        for (int i = 0; i < 4; i++) await cache.GetAsync(i * Table, false, default);
        Assert.Equal(4, cache.Misses);
        await cache.GetAsync(0, true, default); // table 0 is now the most recent, table 1 the least
        Assert.Equal(1, cache.Hits);

        await cache.GetAsync(4 * Table, false, default); // evicts table 1
        var t0 = await cache.GetAsync(0, false, default);
        Assert.Equal(2, cache.Hits);
        Assert.Equal(Filled(1), t0.Data);
        await cache.GetAsync(Table, false, default);
        Assert.Equal(6, cache.Misses); // table 1 had to be read again
        Assert.Empty(_events); // nothing was dirty: no write-back at all
    }

    [Fact]
    public async Task DirtyTableIsWrittenBackOnEvictionAfterItsDependency()
    {
        var cache = NewCache();
        var created = await cache.CreateAsync(10 * Table, Filled(0xAB), false, default);
        Assert.True(created.Dirty);
        Assert.True(cache.HasDirty);
        Assert.Equal(new byte[Table], _device.ToArray().AsSpan(10 * Table, Table).ToArray()); // not written yet

        for (int i = 0; i < 4; i++) await cache.GetAsync(i * Table, false, default); // pushes table 10 out
        Assert.Equal(new[] { "before", $"check {10 * Table} {Table}" }, _events);
        Assert.Equal(Filled(0xAB), _device.ToArray().AsSpan(10 * Table, Table).ToArray());
        Assert.False(cache.HasDirty);
    }

    [Fact]
    public async Task WriteBackRunsTheDependencyOnceThenWritesDirtyTablesInOffsetOrder()
    {
        var cache = NewCache(8);
        var events = _events;
        var order = new List<long>();
        var device = new RecordingDevice(_device, order);
        cache = new TableCache(device, Table, 8, async =>
        {
            events.Add("before");
            Assert.Empty(order); // the dependency runs before the first table write
            return ValueTask.CompletedTask;
        }, (offset, length) => { });
        await cache.CreateAsync(5 * Table, Filled(5), true, default);
        await cache.CreateAsync(2 * Table, Filled(2), true, default);
        var clean = await cache.GetAsync(7 * Table, true, default);
        var t3 = await cache.CreateAsync(3 * Table, Filled(3), true, default);
        t3.Data[0] = 0x33;
        cache.MarkDirty(t3);

        await cache.WriteBackAsync(true, default);
        Assert.Equal(new[] { "before" }, events);
        Assert.Equal(new long[] { 2 * Table, 3 * Table, 5 * Table }, order);
        Assert.Equal(0x33, _device.ToArray()[3 * Table]);
        Assert.False(clean.Dirty);
        Assert.False(cache.HasDirty);

        await cache.WriteBackAsync(true, default); // nothing dirty: no dependency, no writes
        Assert.Single(events);
        Assert.Equal(3, order.Count);
    }

    [Fact]
    public async Task RemovedDirtyTableIsNeverWritten()
    {
        var cache = NewCache();
        await cache.CreateAsync(6 * Table, Filled(6), false, default);
        cache.Remove(6 * Table);
        Assert.False(cache.HasDirty);
        await cache.WriteBackAsync(false, default);
        Assert.Empty(_events);
        Assert.Equal(new byte[Table], _device.ToArray().AsSpan(6 * Table, Table).ToArray());
    }

    /// <summary>Records the offsets of writes, to see the order in which tables reach the device.</summary>
    private sealed class RecordingDevice(BlockDevice inner, List<long> writes) : BlockDevice
    {
        public override string Name => inner.Name;
        public override bool IsReadOnly => false;
        public override long GetLength() => inner.GetLength();
        protected internal override ValueTask ReadCoreAsync(long offset, Memory<byte> buffer, bool async, CancellationToken ct) => inner.ReadCoreAsync(offset, buffer, async, ct);
        protected internal override ValueTask WriteCoreAsync(long offset, ReadOnlyMemory<byte> buffer, bool async, CancellationToken ct)
        {
            writes.Add(offset);
            return inner.WriteCoreAsync(offset, buffer, async, ct);
        }
        protected internal override ValueTask WriteZeroesCoreAsync(long offset, long length, bool mayUnmap, bool async, CancellationToken ct) => inner.WriteZeroesCoreAsync(offset, length, mayUnmap, async, ct);
        protected internal override ValueTask DiscardCoreAsync(long offset, long length, bool async, CancellationToken ct) => inner.DiscardCoreAsync(offset, length, async, ct);
        protected internal override ValueTask FlushCoreAsync(bool async, CancellationToken ct) => inner.FlushCoreAsync(async, ct);
        protected internal override ValueTask SetLengthCoreAsync(long length, bool async, CancellationToken ct) => inner.SetLengthCoreAsync(length, async, ct);
    }
}
