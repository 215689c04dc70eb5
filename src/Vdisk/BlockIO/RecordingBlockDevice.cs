using System.Collections.Immutable;

namespace Vdisk.BlockIO;

/// <summary>The state-changing operations a device log can hold.</summary>
public enum RecordKind { Write, WriteZeroes, Discard, SetLength, Flush }

/// <summary>
/// One completed state-changing request: a write (with a private copy of its data), write-zeroes, discard,
/// set-length (<see cref="Length"/> is the new length, <see cref="Offset"/> 0) or flush (both 0).
/// Record equality compares <see cref="Data"/> as a memory reference, not by content.
/// </summary>
public sealed record DeviceRecord(RecordKind Kind, long Offset, long Length, ReadOnlyMemory<byte> Data = default, bool MayUnmap = false)
{
    public const int SectorSize = 512;

    /// <summary>Replays the request; a discard is replayed as zeroes, the outcome a crash state must tolerate.</summary>
    public void ApplyTo(BlockDevice device)
    {
        switch (Kind)
        {
            case RecordKind.Write: device.Write(Offset, Data); break;
            case RecordKind.WriteZeroes: device.WriteZeroes(Offset, Length, MayUnmap); break;
            case RecordKind.Discard: device.Discard(Offset, Length); break;
            case RecordKind.SetLength: device.SetLength(Length); break;
            case RecordKind.Flush: break;
        }
    }

    /// <summary>
    /// Splits a ranged request at 512-byte device boundaries, the granularity at which a disk can tear a write;
    /// a crash state may then keep any subset of the pieces. Set-length and flush cannot tear: they come back whole.
    /// </summary>
    public IReadOnlyList<DeviceRecord> SplitIntoSectors()
    {
        if (Kind is RecordKind.SetLength or RecordKind.Flush) return [this];
        var pieces = new List<DeviceRecord>();
        for (long pos = Offset, end = Offset + Length; pos < end;)
        {
            long next = Math.Min(end, (pos / SectorSize + 1) * SectorSize);
            var data = Kind == RecordKind.Write ? Data.Slice((int)(pos - Offset), (int)(next - pos)) : default;
            pieces.Add(this with { Offset = pos, Length = next - pos, Data = data });
            pos = next;
        }
        return pieces;
    }

    internal static DeviceRecord ForWrite(long offset, ReadOnlyMemory<byte> buffer) =>
        new(RecordKind.Write, offset, buffer.Length, buffer.ToArray());
}

/// <summary>
/// Orders the records of several <see cref="RecordingBlockDevice"/>s in one timeline, e.g. the files of a backing
/// chain: each completed record takes the next tick. A crash of them all at one instant keeps, on each device, the
/// records before that tick.
/// </summary>
public sealed class RecordClock
{
    private long _now;

    /// <summary>Ticks so far: the time the next record will complete at is <c>Now + 1</c>.</summary>
    public long Now => Interlocked.Read(ref _now);

    internal long Tick() => Interlocked.Increment(ref _now);
}

/// <summary>
/// Passes every request to an inner device and logs each completed write, write-zeroes, discard, set-length and
/// flush in completion order, like QEMU's blklogwrites. A crash-consistency campaign builds crash states from the
/// log: everything up to a flush, plus any subset of the later records, possibly torn into sectors.
/// Requests that fail are not logged. Concurrent overlapping writes are logged in completion order, which may
/// differ from the order the inner device applied them; their outcome is unspecified anyway.
/// </summary>
public sealed class RecordingBlockDevice : BlockDevice
{
    private readonly BlockDevice _inner;
    private readonly bool _leaveInnerOpen;
    private readonly MemoryBlockDevice _initial;
    private readonly object _lock = new();
    private readonly ImmutableArray<DeviceRecord>.Builder _records = ImmutableArray.CreateBuilder<DeviceRecord>();
    private readonly ImmutableArray<long>.Builder _times = ImmutableArray.CreateBuilder<long>();

    /// <summary>
    /// Starts recording; the inner device's current content is captured as the initial state. Recorders given the
    /// same <paramref name="clock"/> share a timeline (<see cref="RecordTimes"/>); without one, a recorder has its own.
    /// </summary>
    public RecordingBlockDevice(BlockDevice inner, bool leaveInnerOpen = false, RecordClock? clock = null)
    {
        _inner = inner;
        _leaveInnerOpen = leaveInnerOpen;
        _initial = DeviceSnapshot.Capture(inner);
        Clock = clock ?? new RecordClock();
    }

    /// <summary>The clock the records' times are read from.</summary>
    public RecordClock Clock { get; }

    public override string Name => _inner.Name;
    public override bool IsReadOnly => _inner.IsReadOnly;
    public override int Alignment => _inner.Alignment;
    public override long GetLength() => _inner.GetLength();

    /// <summary>The log so far, oldest first.</summary>
    public ImmutableArray<DeviceRecord> Records { get { lock (_lock) return _records.ToImmutable(); } }

    /// <summary>When each of <see cref="Records"/> completed, in ticks of <see cref="Clock"/> (increasing, from 1).</summary>
    public ImmutableArray<long> RecordTimes { get { lock (_lock) return _times.ToImmutable(); } }

    /// <summary>Indices into <see cref="Records"/> of the flush records.</summary>
    public ImmutableArray<int> FlushIndices
    {
        get
        {
            var records = Records;
            return [.. Enumerable.Range(0, records.Length).Where(i => records[i].Kind == RecordKind.Flush)];
        }
    }

    /// <summary>
    /// The device as a crash could leave it: the initial state, then the first <paramref name="prefixLength"/>
    /// records (e.g. <c>FlushIndices[k] + 1</c>), then <paramref name="laterRecords"/> in the given order
    /// (typically a subset of the remaining records or of their <see cref="DeviceRecord.SplitIntoSectors"/> pieces).
    /// </summary>
    public MemoryBlockDevice BuildState(int prefixLength, IEnumerable<DeviceRecord>? laterRecords = null)
    {
        var records = Records;
        ArgumentOutOfRangeException.ThrowIfNegative(prefixLength);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(prefixLength, records.Length);
        var state = _initial.Clone();
        foreach (var r in records.AsSpan(0, prefixLength)) r.ApplyTo(state);
        foreach (var r in laterRecords ?? []) r.ApplyTo(state);
        return state;
    }

    /// <summary>Like the other overload, with the later records given by their indices into <see cref="Records"/>.</summary>
    public MemoryBlockDevice BuildState(int prefixLength, IEnumerable<int> laterRecordIndices)
    {
        var records = Records;
        return BuildState(prefixLength, laterRecordIndices.Select(i => records[i]));
    }

    protected internal override ValueTask ReadCoreAsync(long offset, Memory<byte> buffer, bool async, CancellationToken ct)
        => _inner.ReadCoreAsync(offset, buffer, async, ct);

    protected internal override ValueTask<DeviceExtent> GetExtentCoreAsync(long offset, long maxLength, bool async, CancellationToken ct)
        => _inner.GetExtentCoreAsync(offset, maxLength, async, ct);

    protected internal override async ValueTask WriteCoreAsync(long offset, ReadOnlyMemory<byte> buffer, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        // Copy first: the caller may reuse its buffer as soon as the write completes.
        var record = DeviceRecord.ForWrite(offset, buffer);
        await _inner.WriteCoreAsync(offset, buffer, async, ct).ConfigureAwait(false);
        Append(record);
    }

    protected internal override async ValueTask WriteZeroesCoreAsync(long offset, long length, bool mayUnmap, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        await _inner.WriteZeroesCoreAsync(offset, length, mayUnmap, async, ct).ConfigureAwait(false);
        Append(new DeviceRecord(RecordKind.WriteZeroes, offset, length, MayUnmap: mayUnmap));
    }

    protected internal override async ValueTask DiscardCoreAsync(long offset, long length, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        await _inner.DiscardCoreAsync(offset, length, async, ct).ConfigureAwait(false);
        Append(new DeviceRecord(RecordKind.Discard, offset, length));
    }

    protected internal override async ValueTask SetLengthCoreAsync(long length, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        await _inner.SetLengthCoreAsync(length, async, ct).ConfigureAwait(false);
        Append(new DeviceRecord(RecordKind.SetLength, 0, length));
    }

    protected internal override async ValueTask FlushCoreAsync(bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        await _inner.FlushCoreAsync(async, ct).ConfigureAwait(false);
        Append(new DeviceRecord(RecordKind.Flush, 0, 0));
    }

    private void Append(DeviceRecord record)
    {
        lock (_lock)
        {
            _records.Add(record);
            _times.Add(Clock.Tick());
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing && !_leaveInnerOpen) _inner.Dispose();
    }
}

internal static class DeviceSnapshot
{
    /// <summary>A memory copy of a device's content, reading only its data extents so sparse files stay cheap.</summary>
    public static MemoryBlockDevice Capture(BlockDevice device)
    {
        if (device is MemoryBlockDevice memory) return memory.Clone();
        long length = device.GetLength();
        var copy = new MemoryBlockDevice(length, device.Name);
        var buffer = new byte[1 << 20];
        for (long pos = 0; pos < length;)
        {
            var extent = device.GetExtent(pos, length - pos);
            if (extent.IsData)
            {
                for (long done = 0; done < extent.Length;)
                {
                    int n = (int)Math.Min(buffer.Length, extent.Length - done);
                    device.Read(pos + done, buffer.AsMemory(0, n));
                    copy.Write(pos + done, buffer.AsMemory(0, n));
                    done += n;
                }
            }
            pos += Math.Max(1, extent.Length);
        }
        return copy;
    }
}
