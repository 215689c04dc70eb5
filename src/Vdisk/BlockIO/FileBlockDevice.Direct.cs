namespace Vdisk.BlockIO;

/// <summary>O_DIRECT needs offsets, lengths and buffers aligned; unaligned requests go through a bounce buffer.</summary>
public sealed partial class FileBlockDevice
{
    // Under O_DIRECT a partial-block write is a read-modify-write of whole blocks, and a write past the end of the
    // file must be trimmed back to the true length afterwards. Both need a stable file length, so every O_DIRECT
    // request that can change the length, and every read-modify-write, holds this lock; aligned writes inside the
    // file run without it.
    private readonly SemaphoreSlim _directLengthLock = new(1, 1);

    private async ValueTask ReadUnalignedAsync(long offset, Memory<byte> buffer, bool async, CancellationToken ct)
    {
        long start = offset & ~(long)(Alignment - 1);
        long end = (offset + buffer.Length + Alignment - 1) & ~(long)(Alignment - 1);
        using var bounce = AlignedBuffer.Allocate((int)(end - start), Alignment);
        await ReadCoreAsync(start, bounce.Memory, async, ct).ConfigureAwait(false);
        bounce.Memory.Slice((int)(offset - start), buffer.Length).CopyTo(buffer);
    }

    private async ValueTask WriteDirectAsync(long offset, ReadOnlyMemory<byte> buffer, bool async, CancellationToken ct)
    {
        bool aligned = IsAligned(offset, buffer.Length, buffer);
        if (aligned && offset + buffer.Length <= GetLength())
        {
            await PositionalWriteAsync(offset, buffer, async, ct).ConfigureAwait(false);
            return;
        }
        await LockLengthAsync(async, ct).ConfigureAwait(false);
        try
        {
            if (aligned) await PositionalWriteAsync(offset, buffer, async, ct).ConfigureAwait(false);
            else await WriteUnalignedLockedAsync(offset, buffer, async, ct).ConfigureAwait(false);
        }
        finally { _directLengthLock.Release(); }
    }

    private async ValueTask WriteUnalignedLockedAsync(long offset, ReadOnlyMemory<byte> buffer, bool async, CancellationToken ct)
    {
        long start = offset & ~(long)(Alignment - 1);
        long end = (offset + buffer.Length + Alignment - 1) & ~(long)(Alignment - 1);
        long fileLength = GetLength();
        using var bounce = AlignedBuffer.Allocate((int)(end - start), Alignment);
        if (start != offset || end != offset + buffer.Length)
            await ReadCoreAsync(start, bounce.Memory, async, ct).ConfigureAwait(false);
        buffer.CopyTo(bounce.Memory[(int)(offset - start)..]);
        await PositionalWriteAsync(start, bounce.Memory, async, ct).ConfigureAwait(false);
        // The aligned write may have extended the file past the caller's end: restore the true length.
        long wanted = Math.Max(fileLength, offset + buffer.Length);
        if (end > wanted) RandomAccess.SetLength(_handle, wanted);
    }

    /// <summary>
    /// Buffered writes up to this size run on the caller's thread even when asked for asynchronously: copying a
    /// few pages into the page cache takes microseconds, less than handing the call to a thread-pool thread and
    /// waking it (RandomAccess.WriteAsync does that for a handle not opened for async I/O). With -d 1 writethrough
    /// requests that hand-off was about a tenth of each request. Direct I/O goes to the device and keeps the hand-off.
    /// </summary>
    private const int InlineWriteLimit = 64 * 1024;

    private async ValueTask PositionalWriteAsync(long offset, ReadOnlyMemory<byte> buffer, bool async, CancellationToken ct)
    {
        if (async && (Alignment > 1 || buffer.Length > InlineWriteLimit))
            await RandomAccess.WriteAsync(_handle, buffer, offset, ct).ConfigureAwait(false);
        else
        {
            ct.ThrowIfCancellationRequested();
            RandomAccess.Write(_handle, buffer.Span, offset);
        }
    }

    /// <summary>Grows the file to at least <paramref name="newLength"/>, never shrinking it, even while other writes extend it.</summary>
    private async ValueTask GrowToAsync(long newLength, bool async, CancellationToken ct)
    {
        if (Alignment > 1)
        {
            await LockLengthAsync(async, ct).ConfigureAwait(false);
            try { if (GetLength() < newLength) RandomAccess.SetLength(_handle, newLength); }
            finally { _directLengthLock.Release(); }
            return;
        }
        // Without the lock, only grow-only primitives are safe: ftruncate could cut off a concurrent extending write.
        // fallocate of the last byte leaves an unwritten extent that reads as zeros; pwrite is the portable fallback.
        if (OperatingSystem.IsLinux() && LinuxNative.fallocate(_handle, 0, newLength - 1, 1) == 0) return;
        await PositionalWriteAsync(newLength - 1, new byte[1], async, ct).ConfigureAwait(false);
    }

    private ValueTask LockLengthAsync(bool async, CancellationToken ct)
    {
        if (async) return new ValueTask(_directLengthLock.WaitAsync(ct));
        _directLengthLock.Wait(ct);
        return ValueTask.CompletedTask;
    }
}
