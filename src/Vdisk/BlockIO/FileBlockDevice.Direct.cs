namespace Vdisk.BlockIO;

/// <summary>O_DIRECT needs offsets, lengths and buffers aligned; unaligned requests go through a bounce buffer.</summary>
public sealed partial class FileBlockDevice
{
    // Read-modify-write of a partial block must not interleave with another one on the same block.
    private readonly SemaphoreSlim _unalignedWriteLock = new(1, 1);

    private async ValueTask ReadUnalignedAsync(long offset, Memory<byte> buffer, bool async, CancellationToken ct)
    {
        long start = offset & ~(long)(Alignment - 1);
        long end = (offset + buffer.Length + Alignment - 1) & ~(long)(Alignment - 1);
        using var bounce = AlignedBuffer.Allocate((int)(end - start), Alignment);
        await ReadCoreAsync(start, bounce.Memory, async, ct).ConfigureAwait(false);
        bounce.Memory.Slice((int)(offset - start), buffer.Length).CopyTo(buffer);
    }

    private async ValueTask WriteUnalignedAsync(long offset, ReadOnlyMemory<byte> buffer, bool async, CancellationToken ct)
    {
        long start = offset & ~(long)(Alignment - 1);
        long end = (offset + buffer.Length + Alignment - 1) & ~(long)(Alignment - 1);
        long fileLength = GetLength();
        using var bounce = AlignedBuffer.Allocate((int)(end - start), Alignment);
        if (async) await _unalignedWriteLock.WaitAsync(ct).ConfigureAwait(false); else _unalignedWriteLock.Wait(ct);
        try
        {
            if (start != offset || end != offset + buffer.Length)
                await ReadCoreAsync(start, bounce.Memory, async, ct).ConfigureAwait(false);
            buffer.CopyTo(bounce.Memory[(int)(offset - start)..]);
            if (async) await RandomAccess.WriteAsync(Handle, bounce.Memory, start, ct).ConfigureAwait(false);
            else RandomAccess.Write(Handle, bounce.Memory.Span, start);
            // The aligned write may have extended the file past the caller's end: restore the true length.
            long wanted = Math.Max(fileLength, offset + buffer.Length);
            if (end > wanted) RandomAccess.SetLength(Handle, wanted);
        }
        finally { _unalignedWriteLock.Release(); }
    }

    private Microsoft.Win32.SafeHandles.SafeFileHandle Handle => _handle;
}
