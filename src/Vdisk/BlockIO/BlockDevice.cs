using System.Buffers;

namespace Vdisk.BlockIO;

/// <summary>Result of an allocation query on a device: whether [offset, offset+Length) holds data or is a hole.</summary>
public readonly record struct DeviceExtent(long Offset, long Length, bool IsData);

/// <summary>
/// A positional, thread-safe byte device: the host file under an image (or memory, or a fault-injecting wrapper).
/// Every operation has one implementation, <c>...CoreAsync(bool async)</c>; the sync entry points run it with
/// <c>async: false</c>, in which case it completes synchronously, the pattern the BCL uses for HttpClient and Tar.
/// Reads past the end of the device return zeros, as QEMU's file driver does.
/// </summary>
public abstract class BlockDevice : IDisposable, IAsyncDisposable
{
    private int _disposed;

    /// <summary>Name for messages: the file path, or a description.</summary>
    public abstract string Name { get; }
    public abstract bool IsReadOnly { get; }

    /// <summary>Required alignment of offsets, lengths and buffers (1 unless O_DIRECT).</summary>
    public virtual int Alignment => 1;

    public long Length => GetLength();
    public abstract long GetLength();

    /// <summary>
    /// Declares what this user does with the device (<paramref name="use"/>) and what it lets others do meanwhile
    /// (<paramref name="share"/>), QEMU's permissions. A file takes QEMU's byte-range locks and refuses a conflict
    /// with a <see cref="Images.DiskImageErrorKind.Locked"/> error; a device that no one else can open (memory, a
    /// wrapper) has nobody to conflict with and accepts anything.
    /// </summary>
    public virtual void SetPermissions(ImagePermissions use, ImagePermissions share) => ThrowIfDisposed();

    /// <summary>What others may do with the device as far as its locks tell them: everything where nothing stops them.</summary>
    public virtual ImagePermissions SharedWithOthers => ImagePermissions.All;

    /// <summary>Uses <paramref name="more"/> on top of the permissions set before, sharing what was shared (raw takes resize only to resize).</summary>
    public virtual void AddPermissions(ImagePermissions more) => ThrowIfDisposed();

    /// <summary>
    /// In a writethrough cache mode, stops making each write durable on its own: the caller (an image format)
    /// flushes once at the end of every request instead, after ordering its metadata with flushes of its own.
    /// That is how QEMU's block layer implements writethrough, and it saves an fdatasync per file write.
    /// </summary>
    public virtual void LeaveWriteThroughToCaller() { }

    protected internal abstract ValueTask ReadCoreAsync(long offset, Memory<byte> buffer, bool async, CancellationToken ct);
    protected internal abstract ValueTask WriteCoreAsync(long offset, ReadOnlyMemory<byte> buffer, bool async, CancellationToken ct);
    /// <summary>Scatter/gather write of consecutive buffers starting at offset.</summary>
    protected internal virtual async ValueTask WriteGatherCoreAsync(long offset, IReadOnlyList<ReadOnlyMemory<byte>> buffers, bool async, CancellationToken ct)
    {
        foreach (var b in buffers)
        {
            await WriteCoreAsync(offset, b, async, ct).ConfigureAwait(false);
            offset += b.Length;
        }
    }
    /// <summary>Makes [offset, offset+length) read as zeros; with <paramref name="mayUnmap"/> the range may become a hole.</summary>
    protected internal abstract ValueTask WriteZeroesCoreAsync(long offset, long length, bool mayUnmap, bool async, CancellationToken ct);
    /// <summary>Hint that the range is no longer needed; afterwards it reads as zeros or keeps its content.</summary>
    protected internal abstract ValueTask DiscardCoreAsync(long offset, long length, bool async, CancellationToken ct);
    /// <summary>Makes every completed write durable (fdatasync).</summary>
    protected internal abstract ValueTask FlushCoreAsync(bool async, CancellationToken ct);
    protected internal abstract ValueTask SetLengthCoreAsync(long length, bool async, CancellationToken ct);
    /// <summary>
    /// Reserves storage for [offset, offset+length) (preallocation=falloc), extending the device if it is shorter, so
    /// later writes there cannot fail for lack of space; the content is unchanged (zeros past the old end). A device
    /// that has no notion of reserved space only extends itself.
    /// </summary>
    protected internal virtual async ValueTask AllocateCoreAsync(long offset, long length, bool async, CancellationToken ct)
    {
        if (GetLength() < offset + length) await SetLengthCoreAsync(offset + length, async, ct).ConfigureAwait(false);
    }
    /// <summary>Data or hole at offset, as SEEK_DATA/SEEK_HOLE report it; devices that cannot tell report data.</summary>
    protected internal virtual ValueTask<DeviceExtent> GetExtentCoreAsync(long offset, long maxLength, bool async, CancellationToken ct)
    {
        var end = GetLength();
        if (offset >= end) return ValueTask.FromResult(new DeviceExtent(offset, maxLength, false));
        return ValueTask.FromResult(new DeviceExtent(offset, Math.Min(maxLength, end - offset), true));
    }

    /// <summary>
    /// Bytes the device occupies on its storage (qemu-img info's "disk size"). The default sums data extents
    /// in 4 KiB blocks; a file answers with its allocated block count.
    /// </summary>
    public virtual long GetAllocatedSize()
    {
        const long Block = 4096;
        long length = GetLength(), total = 0, countedUpTo = 0;
        for (long offset = 0; offset < length;)
        {
            var extent = GetExtent(offset, length - offset);
            if (extent.Length <= 0) break;
            if (extent.IsData)
            {
                long start = Math.Max(offset / Block * Block, countedUpTo);
                long end = (offset + extent.Length + Block - 1) / Block * Block;
                if (end > start) total += end - start;
                countedUpTo = Math.Max(countedUpTo, end);
            }
            offset += extent.Length;
        }
        return total;
    }

    // ---- public sync API ----
    public void Read(long offset, Memory<byte> buffer) => ReadCoreAsync(offset, buffer, false, default).GetAwaiter().GetResult();
    public void Read(long offset, Span<byte> buffer)
    {
        var rented = ArrayPool<byte>.Shared.Rent(buffer.Length);
        try
        {
            Read(offset, rented.AsMemory(0, buffer.Length));
            rented.AsSpan(0, buffer.Length).CopyTo(buffer);
        }
        finally { ArrayPool<byte>.Shared.Return(rented); }
    }
    public void Write(long offset, ReadOnlyMemory<byte> buffer) => WriteCoreAsync(offset, buffer, false, default).GetAwaiter().GetResult();
    public void Write(long offset, ReadOnlySpan<byte> buffer)
    {
        var rented = ArrayPool<byte>.Shared.Rent(buffer.Length);
        try
        {
            buffer.CopyTo(rented);
            Write(offset, rented.AsMemory(0, buffer.Length));
        }
        finally { ArrayPool<byte>.Shared.Return(rented); }
    }
    public void WriteZeroes(long offset, long length, bool mayUnmap = false) => WriteZeroesCoreAsync(offset, length, mayUnmap, false, default).GetAwaiter().GetResult();
    public void Discard(long offset, long length) => DiscardCoreAsync(offset, length, false, default).GetAwaiter().GetResult();
    public void Flush() => FlushCoreAsync(false, default).GetAwaiter().GetResult();
    public void SetLength(long length) => SetLengthCoreAsync(length, false, default).GetAwaiter().GetResult();
    public void Allocate(long offset, long length) => AllocateCoreAsync(offset, length, false, default).GetAwaiter().GetResult();
    public DeviceExtent GetExtent(long offset, long maxLength) => GetExtentCoreAsync(offset, maxLength, false, default).GetAwaiter().GetResult();

    // ---- public async API ----
    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken ct = default) => ReadCoreAsync(offset, buffer, true, ct);
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> buffer, CancellationToken ct = default) => WriteCoreAsync(offset, buffer, true, ct);
    public ValueTask WriteZeroesAsync(long offset, long length, bool mayUnmap = false, CancellationToken ct = default) => WriteZeroesCoreAsync(offset, length, mayUnmap, true, ct);
    public ValueTask DiscardAsync(long offset, long length, CancellationToken ct = default) => DiscardCoreAsync(offset, length, true, ct);
    public ValueTask FlushAsync(CancellationToken ct = default) => FlushCoreAsync(true, ct);
    public ValueTask SetLengthAsync(long length, CancellationToken ct = default) => SetLengthCoreAsync(length, true, ct);
    public ValueTask AllocateAsync(long offset, long length, CancellationToken ct = default) => AllocateCoreAsync(offset, length, true, ct);
    public ValueTask<DeviceExtent> GetExtentAsync(long offset, long maxLength, CancellationToken ct = default) => GetExtentCoreAsync(offset, maxLength, true, ct);

    protected bool IsDisposed => Volatile.Read(ref _disposed) != 0;
    protected void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(IsDisposed, this);

    protected virtual void Dispose(bool disposing) { }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }
}
