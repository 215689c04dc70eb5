namespace Vdisk.Images;

/// <summary>What went wrong, so callers (and the CLI's exit codes) can tell failures apart without parsing text.</summary>
public enum DiskImageErrorKind
{
    /// <summary>The underlying file or device failed (EIO, ...); <see cref="DiskImageException.Errno"/> has the host's error.</summary>
    Io,
    /// <summary>The file is not a valid image of the expected format.</summary>
    InvalidFormat,
    /// <summary>The image uses a feature this implementation does not support.</summary>
    UnsupportedFeature,
    /// <summary>Metadata is inconsistent; the image may be marked corrupt.</summary>
    CorruptImage,
    /// <summary>A request lies outside the image.</summary>
    OutOfBounds,
    /// <summary>A write was attempted on a read-only image.</summary>
    ReadOnly,
    /// <summary>An argument or option is invalid.</summary>
    InvalidArgument,
    /// <summary>The image or a file it needs could not be found or opened.</summary>
    NotFound,
    /// <summary>The host file system is full (ENOSPC, EDQUOT).</summary>
    NoSpace,
    /// <summary>Another user holds a lock on the image that conflicts with this open (QEMU's image locking).</summary>
    Locked,
}

/// <summary>
/// A failure on a disk image, naming the file, the offset (when one applies) and the problem.
/// The message is a single line, ready for a CLI's stderr.
/// </summary>
public class DiskImageException : IOException
{
    public DiskImageException(DiskImageErrorKind kind, string? path, string problem, long? offset = null, Exception? inner = null)
        : this(kind, path, problem, offset, inner, errno: null) { }

    /// <summary>A failure that carries its own errno, where the kind's usual one would not say it right.</summary>
    public DiskImageException(DiskImageErrorKind kind, string? path, string problem, long? offset, Exception? inner, int? errno)
        : base(Compose(path, problem, offset), inner)
    {
        Kind = kind;
        FilePath = path;
        Problem = problem;
        Offset = offset;
        _errno = errno;
    }

    /// <summary>
    /// A failure of the host (the file system or the device under the image): kind <see cref="DiskImageErrorKind.Io"/>,
    /// or <see cref="DiskImageErrorKind.NoSpace"/> for ENOSPC/EDQUOT, carrying the host's errno and its text
    /// ("write failed: No space left on device").
    /// </summary>
    public static DiskImageException HostError(string? path, string operation, int errno, long? offset = null, Exception? inner = null)
        => new(errno is HostErrno.ENOSPC or HostErrno.EDQUOT ? DiskImageErrorKind.NoSpace : DiskImageErrorKind.Io,
            path, $"{operation} failed: {HostErrno.Describe(errno)}", offset, inner, errno);

    private readonly int? _errno;

    public DiskImageErrorKind Kind { get; }
    public string? FilePath { get; }
    public string Problem { get; }
    public long? Offset { get; }

    /// <summary>errno-style code: the host's own for a host failure, else the one QEMU's block layer uses for the kind.</summary>
    public int Errno => _errno ?? Kind switch
    {
        DiskImageErrorKind.OutOfBounds => HostErrno.EINVAL,
        DiskImageErrorKind.ReadOnly => HostErrno.EACCES,
        DiskImageErrorKind.InvalidArgument => HostErrno.EINVAL,
        DiskImageErrorKind.UnsupportedFeature => HostErrno.ENOTSUP,
        DiskImageErrorKind.NoSpace => HostErrno.ENOSPC,
        DiskImageErrorKind.Locked => HostErrno.EAGAIN,
        _ => HostErrno.EIO,
    };

    private static string Compose(string? path, string problem, long? offset)
    {
        var where = path is null ? "" : path + ": ";
        return offset is { } o ? $"{where}{problem} (offset 0x{o:x})" : where + problem;
    }
}

/// <summary>Metadata corruption detected while using an image (QEMU's "Marking image as corrupt").</summary>
public sealed class CorruptImageException : DiskImageException
{
    public CorruptImageException(string? path, string problem, long? offset = null)
        : base(DiskImageErrorKind.CorruptImage, path, problem, offset) { }
}
