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
    // Set (to 1) once the file system has refused the call as unsupported; read with Volatile.Read.
    private int _punchHoleUnsupported;
    private int _zeroRangeUnsupported;
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
    internal bool ZeroesByAllocation => OperatingSystem.IsLinux() && Alignment == 1 && Volatile.Read(ref _zeroRangeUnsupported) == 0;
    public CacheMode CacheMode => _cache;

    private bool _syncEachWrite;

    public override void LeaveWriteThroughToCaller() => _syncEachWrite = false;

    /// <summary>Opens an existing file.</summary>
    public static FileBlockDevice Open(string path, bool readOnly = false, CacheMode cache = CacheMode.Writeback)
        => OpenCore(path, readOnly, cache, FileMode.Open);

    /// <summary>
    /// Creates a file, or empties an existing one: first it takes the permissions a creator needs (write and resize,
    /// sharing no resize, as QEMU's file driver does), so an image another process (or this one) has open is
    /// refused before a byte of it is lost.
    /// </summary>
    public static FileBlockDevice Create(string path, CacheMode cache = CacheMode.Writeback)
    {
        var device = OpenCore(path, false, cache, FileMode.OpenOrCreate);
        try
        {
            device.SetPermissions(ImagePermissions.Write | ImagePermissions.Resize, ImagePermissions.All & ~ImagePermissions.Resize);
            device.SetLength(0);
            return device;
        }
        catch
        {
            device.Dispose();
            throw;
        }
    }

    private static FileBlockDevice OpenCore(string path, bool readOnly, CacheMode cache, FileMode mode)
    {
        SafeFileHandle handle;
        try
        {
            if (cache.UsesDirectIo() && OperatingSystem.IsLinux())
            {
                if (mode == FileMode.OpenOrCreate)
                    File.OpenHandle(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete).Dispose();
                handle = OpenDirect(path, readOnly);
            }
            else
            {
                handle = File.OpenHandle(path, mode, readOnly ? FileAccess.Read : FileAccess.ReadWrite,
                    FileShare.ReadWrite | FileShare.Delete);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException && e is not Images.DiskImageException)
        {
            throw OpenFailure(path, readOnly, mode == FileMode.OpenOrCreate, e);
        }
        int alignment = cache.UsesDirectIo() && OperatingSystem.IsLinux() ? 4096 : 1;
        return new FileBlockDevice(handle, path, readOnly, cache, alignment);
    }

    /// <summary>
    /// qemu's wording for a file that cannot be opened: "Could not open: No such file or directory" (the CLI puts the
    /// file name in). .NET refuses a directory with "access denied" whatever the mode, so a directory is named here:
    /// opened for writing, open(2) would say EISDIR; read-only, qemu's file driver opens it and then refuses anything
    /// but a regular file.
    /// </summary>
    private static Images.DiskImageException OpenFailure(string path, bool readOnly, bool create, Exception e)
    {
        int errno = Images.HostErrno.Of(e);
        if (errno == Images.HostErrno.EACCES && Directory.Exists(path))
        {
            if (readOnly && !create)
                return new Images.DiskImageException(Images.DiskImageErrorKind.InvalidArgument, path,
                    $"'file' driver requires '{path}' to be a regular file", null, e);
            errno = Images.HostErrno.EISDIR;
        }
        var kind = errno == Images.HostErrno.ENOENT ? Images.DiskImageErrorKind.NotFound : Images.DiskImageErrorKind.Io;
        return new Images.DiskImageException(kind, path, $"Could not {(create ? "create" : "open")}: {Images.HostErrno.Describe(errno)}", null, e);
    }

    private static SafeFileHandle OpenDirect(string path, bool readOnly)
    {
        if (!OperatingSystem.IsLinux()) throw new PlatformNotSupportedException("O_DIRECT");
        int flags = (readOnly ? LinuxNative.O_RDONLY : LinuxNative.O_RDWR) | LinuxNative.O_CLOEXEC | LinuxNative.O_DIRECT;
        int fd = LinuxNative.open(path, flags, 0);
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (errno == LinuxNative.EINVAL)
                throw new Images.DiskImageException(Images.DiskImageErrorKind.UnsupportedFeature, path, "Could not open: the file system does not support O_DIRECT (cache=none)");
            throw new IOException(Marshal.GetPInvokeErrorMessage(errno), errno); // mapped by the caller
        }
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    public override long GetLength() => RandomAccess.GetLength(_handle);

    protected internal override async ValueTask ReadCoreAsync(long offset, Memory<byte> buffer, bool async, CancellationToken ct)
    {
        try { await ReadInnerAsync(offset, buffer, async, ct).ConfigureAwait(false); }
        catch (Exception e) when (IsHostFailure(e)) { throw HostError("read", e, offset); }
    }

    private async ValueTask ReadInnerAsync(long offset, Memory<byte> buffer, bool async, CancellationToken ct)
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
            if (!mayUnmap && OperatingSystem.IsLinux() && Alignment == 1 && Volatile.Read(ref _zeroRangeUnsupported) == 0
                && Fallocate(LinuxNative.FALLOC_FL_ZERO_RANGE, offset, length, ref _zeroRangeUnsupported))
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
            if (mayUnmap && Volatile.Read(ref _punchHoleUnsupported) == 0 && offset + length <= fileLength
                && Fallocate(LinuxNative.FALLOC_FL_PUNCH_HOLE | LinuxNative.FALLOC_FL_KEEP_SIZE, offset, length, ref _punchHoleUnsupported))
            {
                if (_syncEachWrite) Sync();
                return;
            }
            if (Volatile.Read(ref _zeroRangeUnsupported) == 0 && Fallocate(LinuxNative.FALLOC_FL_ZERO_RANGE, offset, length, ref _zeroRangeUnsupported))
            {
                if (_syncEachWrite) Sync();
                return;
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
        if (length > 0 && OperatingSystem.IsLinux() && Volatile.Read(ref _punchHoleUnsupported) == 0)
        {
            long end = Math.Min(offset + length, GetLength());
            if (end > offset &&
                LinuxNative.fallocate(_handle, LinuxNative.FALLOC_FL_PUNCH_HOLE | LinuxNative.FALLOC_FL_KEEP_SIZE, offset, end - offset) != 0)
                Volatile.Write(ref _punchHoleUnsupported, 1); // discard is advisory: silently keep the data
        }
        return ValueTask.CompletedTask;
    }

    private void Sync()
    {
        if (OperatingSystem.IsLinux())
        {
            if (LinuxNative.fdatasync(_handle) != 0) throw Images.DiskImageException.HostError(_path, "flush", Marshal.GetLastPInvokeError());
        }
        else
        {
            try { RandomAccess.FlushToDisk(_handle); }
            catch (IOException e) { throw HostError("flush", e, null); }
        }
    }

    /// <summary>
    /// fallocate(2) with <paramref name="mode"/>: true when done; false when this file system does not do it, which
    /// <paramref name="unsupported"/> remembers so the caller falls back to writing. Any other failure (ENOSPC, EIO,
    /// EFBIG) is the answer to the request and is thrown: a full disk must not pass for a missing feature.
    /// </summary>
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    private bool Fallocate(int mode, long offset, long length, ref int unsupported, string operation = "write zeroes")
    {
        if (LinuxNative.fallocate(_handle, mode, offset, length) == 0) return true;
        int errno = Marshal.GetLastPInvokeError();
        if (errno is LinuxNative.EOPNOTSUPP or LinuxNative.ENOSYS or LinuxNative.EINVAL)
        {
            Volatile.Write(ref unsupported, 1);
            return false;
        }
        throw Images.DiskImageException.HostError(_path, operation, errno, offset);
    }

    /// <summary>
    /// What .NET raises for a failed system call: an IOException (errno in HResult), UnauthorizedAccessException
    /// (EACCES, EPERM), or, for EFBIG (a file past the file system's or RLIMIT_FSIZE's limit),
    /// ArgumentOutOfRangeException. Arguments are checked before they reach this device, so that last one is EFBIG here.
    /// </summary>
    private static bool IsHostFailure(Exception e)
        => e is IOException or UnauthorizedAccessException or ArgumentOutOfRangeException && e is not Images.DiskImageException;

    private Images.DiskImageException HostError(string operation, Exception e, long? offset)
        => Images.DiskImageException.HostError(_path, operation,
            e is ArgumentOutOfRangeException ? Images.HostErrno.EFBIG : Images.HostErrno.Of(e), offset, e);

    private ValueTask SetLengthInnerAsync(long length, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        ThrowIfReadOnly();
        RandomAccess.SetLength(_handle, length);
        return ValueTask.CompletedTask;
    }

    /// <summary>fallocate(2) mode 0, or zeros written where the file system cannot reserve space.</summary>
    protected internal override async ValueTask AllocateCoreAsync(long offset, long length, bool async, CancellationToken ct)
    {
        BeginChange();
        try
        {
            ThrowIfDisposed();
            ThrowIfReadOnly();
            int unsupported = 0;
            if (OperatingSystem.IsLinux() && Fallocate(0, offset, length, ref unsupported, "allocate")) return;
            await WriteZeroBuffersAsync(offset, length, async, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (IsHostFailure(e)) { throw HostError("allocate", e, offset); }
        finally { EndChange(); }
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
        if (!disposing) return;
        ReleaseLocks();
        _handle.Dispose();
    }
}
