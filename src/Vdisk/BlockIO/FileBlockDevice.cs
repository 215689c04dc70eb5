using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Vdisk.BlockIO;

/// <summary>
/// A host file, accessed with positional I/O (<see cref="RandomAccess"/>, pread/pwrite), so concurrent requests
/// at different offsets need no lock. Honours QEMU's cache modes: O_DIRECT for none/directsync, a flush after
/// each write for writethrough/directsync, no flush at all for unsafe.
/// </summary>
public sealed partial class FileBlockDevice : BlockDevice
{
    private readonly SafeFileHandle _handle;
    private readonly string _path;
    private readonly CacheMode _cache;
    private volatile bool _punchHoleUnsupported;
    private volatile bool _zeroRangeUnsupported;
    private volatile bool _seekDataUnsupported;

    private FileBlockDevice(SafeFileHandle handle, string path, bool readOnly, CacheMode cache, int alignment)
    {
        _handle = handle;
        _path = path;
        IsReadOnly = readOnly;
        _cache = cache;
        _syncEachWrite = cache.IsWriteThrough();
        Alignment = alignment;
    }

    public override string Name => _path;
    public override bool IsReadOnly { get; }
    public override int Alignment { get; }

    /// <summary>Write-zeroes is a fallocate(2) call here, not a write of zeroed buffers (Linux, buffered I/O, and the file system accepts it).</summary>
    internal bool ZeroesByAllocation => OperatingSystem.IsLinux() && Alignment == 1 && !_zeroRangeUnsupported;
    public CacheMode CacheMode => _cache;

    private bool _syncEachWrite;

    public override void LeaveWriteThroughToCaller() => _syncEachWrite = false;

    /// <summary>Opens an existing file.</summary>
    public static FileBlockDevice Open(string path, bool readOnly = false, CacheMode cache = CacheMode.Writeback)
        => OpenCore(path, readOnly, cache, FileMode.Open);

    /// <summary>Creates (or truncates) a file.</summary>
    public static FileBlockDevice Create(string path, CacheMode cache = CacheMode.Writeback)
        => OpenCore(path, false, cache, FileMode.Create);

    private static FileBlockDevice OpenCore(string path, bool readOnly, CacheMode cache, FileMode mode)
    {
        SafeFileHandle handle;
        try
        {
            if (cache.UsesDirectIo() && OperatingSystem.IsLinux())
            {
                if (mode == FileMode.Create)
                    File.OpenHandle(path, FileMode.Create, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete).Dispose();
                handle = OpenDirect(path, readOnly);
            }
            else
            {
                handle = File.OpenHandle(path, mode, readOnly ? FileAccess.Read : FileAccess.ReadWrite,
                    FileShare.ReadWrite | FileShare.Delete);
            }
        }
        catch (FileNotFoundException)
        {
            throw new Images.DiskImageException(Images.DiskImageErrorKind.NotFound, path, "Could not open: No such file or directory");
        }
        catch (DirectoryNotFoundException)
        {
            throw new Images.DiskImageException(Images.DiskImageErrorKind.NotFound, path, "Could not open: No such file or directory");
        }
        catch (UnauthorizedAccessException)
        {
            throw new Images.DiskImageException(Images.DiskImageErrorKind.Io, path, "Could not open: Permission denied");
        }
        catch (IOException e) when (e is not Images.DiskImageException)
        {
            throw new Images.DiskImageException(Images.DiskImageErrorKind.Io, path, "Could not open: " + e.Message, null, e);
        }
        int alignment = cache.UsesDirectIo() && OperatingSystem.IsLinux() ? 4096 : 1;
        return new FileBlockDevice(handle, path, readOnly, cache, alignment);
    }

    private static SafeFileHandle OpenDirect(string path, bool readOnly)
    {
        if (!OperatingSystem.IsLinux()) throw new PlatformNotSupportedException("O_DIRECT");
        int flags = (readOnly ? LinuxNative.O_RDONLY : LinuxNative.O_RDWR) | LinuxNative.O_CLOEXEC | LinuxNative.O_DIRECT;
        int fd = LinuxNative.open(path, flags, 0);
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (errno == 2) throw new FileNotFoundException(path);
            if (errno == LinuxNative.EINVAL)
                throw new Images.DiskImageException(Images.DiskImageErrorKind.UnsupportedFeature, path, "Could not open: the file system does not support O_DIRECT (cache=none)");
            throw new IOException(Marshal.GetPInvokeErrorMessage(errno)); // mapped by the caller
        }
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    public override long GetLength() => RandomAccess.GetLength(_handle);

    protected internal override async ValueTask ReadCoreAsync(long offset, Memory<byte> buffer, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        if (Alignment > 1 && !IsAligned(offset, buffer.Length, buffer))
        {
            await ReadUnalignedAsync(offset, buffer, async, ct).ConfigureAwait(false);
            return;
        }
        int done = 0;
        while (done < buffer.Length)
        {
            var slice = buffer[done..];
            int n = async
                ? await RandomAccess.ReadAsync(_handle, slice, offset + done, ct).ConfigureAwait(false)
                : RandomAccess.Read(_handle, slice.Span, offset + done);
            // A regular file returns less than asked only at its end. Under O_DIRECT the next read would start
            // unaligned, which some file systems reject, so confirm the end here instead of reading on.
            if (n == 0 || (Alignment > 1 && n < slice.Length && offset + done + n >= GetLength()))
            {
                slice.Span[n..].Clear(); // past end of file reads as zeros
                return;
            }
            done += n;
        }
    }

    private async ValueTask WriteInnerAsync(long offset, ReadOnlyMemory<byte> buffer, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        ThrowIfReadOnly();
        if (Alignment > 1) await WriteDirectAsync(offset, buffer, async, ct).ConfigureAwait(false);
        else await PositionalWriteAsync(offset, buffer, async, ct).ConfigureAwait(false);
        if (_syncEachWrite) Sync();
    }

    private async ValueTask WriteGatherInnerAsync(long offset, IReadOnlyList<ReadOnlyMemory<byte>> buffers, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        ThrowIfReadOnly();
        if (Alignment > 1)
        {
            foreach (var b in buffers) { await WriteCoreAsync(offset, b, async, ct).ConfigureAwait(false); offset += b.Length; }
            return;
        }
        if (async) await RandomAccess.WriteAsync(_handle, buffers, offset, ct).ConfigureAwait(false);
        else RandomAccess.Write(_handle, buffers, offset);
        if (_syncEachWrite) Sync();
    }

    private async ValueTask WriteZeroesInnerAsync(long offset, long length, bool mayUnmap, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        ThrowIfReadOnly();
        if (length <= 0) return;
        long fileLength = GetLength();
        // A range wholly past the end of the file already reads as zeros once the file is extended. Without
        // mayUnmap the caller wants the space allocated, as QEMU does for a new cluster: zero-range allocates it
        // (unwritten extents) and extends the file in one call.
        if (offset >= fileLength)
        {
            if (!mayUnmap && OperatingSystem.IsLinux() && Alignment == 1 && !_zeroRangeUnsupported
                && LinuxNative.fallocate(_handle, LinuxNative.FALLOC_FL_ZERO_RANGE, offset, length) == 0)
            {
                if (_syncEachWrite) Sync();
                return;
            }
            await GrowToAsync(offset + length, async, ct).ConfigureAwait(false);
            if (_syncEachWrite) Sync();
            return;
        }
        if (OperatingSystem.IsLinux() && Alignment == 1)
        {
            if (mayUnmap && !_punchHoleUnsupported && offset + length <= fileLength)
            {
                if (LinuxNative.fallocate(_handle, LinuxNative.FALLOC_FL_PUNCH_HOLE | LinuxNative.FALLOC_FL_KEEP_SIZE, offset, length) == 0)
                {
                    if (_syncEachWrite) Sync();
                    return;
                }
                _punchHoleUnsupported = true;
            }
            if (!_zeroRangeUnsupported)
            {
                if (LinuxNative.fallocate(_handle, LinuxNative.FALLOC_FL_ZERO_RANGE, offset, length) == 0)
                {
                    if (_syncEachWrite) Sync();
                    return;
                }
                _zeroRangeUnsupported = true;
            }
        }
        await WriteZeroBuffersAsync(offset, length, async, ct).ConfigureAwait(false);
    }

    private async ValueTask WriteZeroBuffersAsync(long offset, long length, bool async, CancellationToken ct)
    {
        int chunk = (int)Math.Min(length, 1 << 20);
        using var zeros = AlignedBuffer.Allocate(chunk, Math.Max(Alignment, 1));
        zeros.Memory.Span.Clear();
        for (long done = 0; done < length;)
        {
            int n = (int)Math.Min(chunk, length - done);
            await WriteCoreAsync(offset + done, zeros.Memory[..n], async, ct).ConfigureAwait(false);
            done += n;
        }
    }

    private ValueTask DiscardInnerAsync(long offset, long length, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        ThrowIfReadOnly();
        if (length > 0 && OperatingSystem.IsLinux() && !_punchHoleUnsupported)
        {
            long end = Math.Min(offset + length, GetLength());
            if (end > offset &&
                LinuxNative.fallocate(_handle, LinuxNative.FALLOC_FL_PUNCH_HOLE | LinuxNative.FALLOC_FL_KEEP_SIZE, offset, end - offset) != 0)
                _punchHoleUnsupported = true; // discard is advisory: silently keep the data
        }
        return ValueTask.CompletedTask;
    }

    private void Sync()
    {
        if (OperatingSystem.IsLinux())
        {
            if (LinuxNative.fdatasync(_handle) != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                throw new IOException($"{_path}: fdatasync failed: {Marshal.GetPInvokeErrorMessage(errno)}");
            }
        }
        else RandomAccess.FlushToDisk(_handle);
    }

    private ValueTask SetLengthInnerAsync(long length, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        ThrowIfReadOnly();
        RandomAccess.SetLength(_handle, length);
        return ValueTask.CompletedTask;
    }

    /// <summary>Reserves (fallocate) [offset, offset+length) so later writes cannot fail with ENOSPC.</summary>
    public void Allocate(long offset, long length)
    {
        BeginChange();
        try { AllocateInner(offset, length); }
        finally { EndChange(); }
    }

    private void AllocateInner(long offset, long length)
    {
        ThrowIfReadOnly();
        if (OperatingSystem.IsLinux() && LinuxNative.fallocate(_handle, 0, offset, length) == 0) return;
        WriteZeroBuffersAsync(offset, length, false, default).GetAwaiter().GetResult();
    }

    protected internal override ValueTask<DeviceExtent> GetExtentCoreAsync(long offset, long maxLength, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        long end = GetLength();
        if (offset >= end) return ValueTask.FromResult(new DeviceExtent(offset, maxLength, false));
        long limit = Math.Min(offset + maxLength, end);
        if (OperatingSystem.IsLinux() && !_seekDataUnsupported)
        {
            long data = LinuxNative.lseek(_handle, offset, LinuxNative.SEEK_DATA);
            if (data < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno == LinuxNative.ENXIO) return ValueTask.FromResult(new DeviceExtent(offset, limit - offset, false));
                _seekDataUnsupported = true;
            }
            else if (data > offset)
            {
                return ValueTask.FromResult(new DeviceExtent(offset, Math.Min(data, limit) - offset, false));
            }
            else
            {
                long hole = LinuxNative.lseek(_handle, offset, LinuxNative.SEEK_HOLE);
                if (hole > offset) return ValueTask.FromResult(new DeviceExtent(offset, Math.Min(hole, limit) - offset, true));
                _seekDataUnsupported = hole < 0;
            }
        }
        return ValueTask.FromResult(new DeviceExtent(offset, limit - offset, true));
    }

    private void ThrowIfReadOnly()
    {
        if (IsReadOnly) throw new Images.DiskImageException(Images.DiskImageErrorKind.ReadOnly, _path, "Permission denied: the file is open read-only");
    }

    private bool IsAligned(long offset, int length, ReadOnlyMemory<byte> buffer)
    {
        if (((offset | (long)length) & (Alignment - 1)) != 0) return false;
        using var pin = buffer.Pin();
        unsafe { return ((nint)pin.Pointer & (Alignment - 1)) == 0; }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _handle.Dispose();
    }
}
