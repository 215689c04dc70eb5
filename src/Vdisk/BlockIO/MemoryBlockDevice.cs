namespace Vdisk.BlockIO;

/// <summary>
/// A growable in-memory device, for tests and scratch images. Storage is a sparse list of 64 KiB chunks so a
/// large, mostly empty device costs little. Thread-safe through one lock: it exists for correctness, not speed.
/// </summary>
public sealed class MemoryBlockDevice : BlockDevice
{
    private const int ChunkBits = 16;
    private const int ChunkSize = 1 << ChunkBits;
    private readonly Dictionary<long, byte[]> _chunks = new();
    private readonly object _lock = new();
    private readonly string _name;
    private long _length;

    public MemoryBlockDevice(long length = 0, string name = "memory", bool readOnly = false)
    {
        _length = length;
        _name = name;
        IsReadOnly = readOnly;
    }

    public override string Name => _name;
    public override bool IsReadOnly { get; }
    public int FlushCount { get; private set; }

    public override long GetLength() { lock (_lock) return _length; }

    /// <summary>A deep copy, e.g. to snapshot a device's state in a test.</summary>
    public MemoryBlockDevice Clone(bool readOnly = false)
    {
        lock (_lock)
        {
            var copy = new MemoryBlockDevice(_length, _name, readOnly);
            foreach (var (k, v) in _chunks) copy._chunks[k] = (byte[])v.Clone();
            return copy;
        }
    }

    public byte[] ToArray()
    {
        var result = new byte[GetLength()];
        Read(0, result.AsMemory());
        return result;
    }

    protected internal override ValueTask ReadCoreAsync(long offset, Memory<byte> buffer, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        lock (_lock)
        {
            var span = buffer.Span;
            int done = 0;
            while (done < span.Length)
            {
                long pos = offset + done;
                int inChunk = (int)(pos & (ChunkSize - 1));
                int n = Math.Min(span.Length - done, ChunkSize - inChunk);
                var dst = span.Slice(done, n);
                if (pos >= _length) dst.Clear();
                else
                {
                    if (_chunks.TryGetValue(pos >> ChunkBits, out var chunk)) chunk.AsSpan(inChunk, n).CopyTo(dst);
                    else dst.Clear();
                    long valid = _length - pos;
                    if (valid < n) dst[(int)valid..].Clear();
                }
                done += n;
            }
        }
        return ValueTask.CompletedTask;
    }

    protected internal override ValueTask WriteCoreAsync(long offset, ReadOnlyMemory<byte> buffer, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        if (IsReadOnly) throw new Images.DiskImageException(Images.DiskImageErrorKind.ReadOnly, _name, "device is read-only");
        lock (_lock)
        {
            var span = buffer.Span;
            int done = 0;
            while (done < span.Length)
            {
                long pos = offset + done;
                int inChunk = (int)(pos & (ChunkSize - 1));
                int n = Math.Min(span.Length - done, ChunkSize - inChunk);
                if (!_chunks.TryGetValue(pos >> ChunkBits, out var chunk))
                    _chunks[pos >> ChunkBits] = chunk = new byte[ChunkSize];
                span.Slice(done, n).CopyTo(chunk.AsSpan(inChunk, n));
                done += n;
            }
            _length = Math.Max(_length, offset + span.Length);
        }
        return ValueTask.CompletedTask;
    }

    protected internal override ValueTask WriteZeroesCoreAsync(long offset, long length, bool mayUnmap, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        if (IsReadOnly) throw new Images.DiskImageException(Images.DiskImageErrorKind.ReadOnly, _name, "device is read-only");
        lock (_lock)
        {
            ZeroRange(offset, length);
            _length = Math.Max(_length, offset + length);
        }
        return ValueTask.CompletedTask;
    }

    protected internal override ValueTask DiscardCoreAsync(long offset, long length, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        if (IsReadOnly) throw new Images.DiskImageException(Images.DiskImageErrorKind.ReadOnly, _name, "device is read-only");
        lock (_lock) ZeroRange(offset, Math.Min(length, Math.Max(0, _length - offset)));
        return ValueTask.CompletedTask;
    }

    private void ZeroRange(long offset, long length)
    {
        long end = offset + length;
        for (long pos = offset; pos < end;)
        {
            int inChunk = (int)(pos & (ChunkSize - 1));
            int n = (int)Math.Min(end - pos, ChunkSize - inChunk);
            if (_chunks.TryGetValue(pos >> ChunkBits, out var chunk))
            {
                if (n == ChunkSize) _chunks.Remove(pos >> ChunkBits);
                else chunk.AsSpan(inChunk, n).Clear();
            }
            pos += n;
        }
    }

    protected internal override ValueTask FlushCoreAsync(bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        lock (_lock) FlushCount++;
        return ValueTask.CompletedTask;
    }

    protected internal override ValueTask SetLengthCoreAsync(long length, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        if (IsReadOnly) throw new Images.DiskImageException(Images.DiskImageErrorKind.ReadOnly, _name, "device is read-only");
        lock (_lock)
        {
            if (length < _length)
            {
                ZeroRange(length, _length - length);
                foreach (var key in _chunks.Keys.Where(k => k << ChunkBits >= length).ToList()) _chunks.Remove(key);
            }
            _length = length;
        }
        return ValueTask.CompletedTask;
    }

    protected internal override ValueTask<DeviceExtent> GetExtentCoreAsync(long offset, long maxLength, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        lock (_lock)
        {
            long end = Math.Min(offset + maxLength, Math.Max(offset, _length));
            if (offset >= _length) return ValueTask.FromResult(new DeviceExtent(offset, maxLength, false));
            bool data = _chunks.ContainsKey(offset >> ChunkBits);
            long pos = offset;
            while (pos < end && _chunks.ContainsKey(pos >> ChunkBits) == data)
                pos = ((pos >> ChunkBits) + 1) << ChunkBits;
            return ValueTask.FromResult(new DeviceExtent(offset, Math.Min(pos, end) - offset, data));
        }
    }
}
