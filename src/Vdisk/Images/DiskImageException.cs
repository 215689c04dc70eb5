namespace Vdisk.Images;

/// <summary>What went wrong, so callers (and the CLI's exit codes) can tell failures apart without parsing text.</summary>
public enum DiskImageErrorKind
{
    /// <summary>The underlying file or device failed (EIO, ENOSPC, ...).</summary>
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
}

/// <summary>
/// A failure on a disk image, naming the file, the offset (when one applies) and the problem.
/// The message is a single line, ready for a CLI's stderr.
/// </summary>
public class DiskImageException : IOException
{
    public DiskImageException(DiskImageErrorKind kind, string? path, string problem, long? offset = null, Exception? inner = null)
        : base(Compose(path, problem, offset), inner)
    {
        Kind = kind;
        FilePath = path;
        Problem = problem;
        Offset = offset;
    }

    public DiskImageErrorKind Kind { get; }
    public string? FilePath { get; }
    public string Problem { get; }
    public long? Offset { get; }

    /// <summary>errno-style code for protocol layers (NBD) that must report one.</summary>
    public int Errno => Kind switch
    {
        DiskImageErrorKind.OutOfBounds => 22,      // EINVAL
        DiskImageErrorKind.ReadOnly => 1,          // EPERM
        DiskImageErrorKind.InvalidArgument => 22,  // EINVAL
        DiskImageErrorKind.UnsupportedFeature => 95, // ENOTSUP
        _ => Inner is IOException io && io.HResult == 28 ? 28 : 5, // ENOSPC or EIO
    };

    private Exception? Inner => InnerException;

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
