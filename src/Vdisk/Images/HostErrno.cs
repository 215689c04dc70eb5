using System.Runtime.InteropServices;

namespace Vdisk.Images;

/// <summary>
/// The errno values Vdisk reports (Linux numbering, which NBD and QEMU's messages use too), and how to read one off
/// the exceptions .NET raises for a failed system call.
/// </summary>
public static class HostErrno
{
    public const int EPERM = 1, ENOENT = 2, EIO = 5, EAGAIN = 11, EACCES = 13, EEXIST = 17, EISDIR = 21, EINVAL = 22,
        EFBIG = 27, ENOSPC = 28, EROFS = 30, ENOTSUP = 95, EDQUOT = 122, ENOMEDIUM = 123;

    /// <summary>
    /// The errno behind an exception from a file operation. .NET on Unix gives a generic <see cref="IOException"/> the
    /// errno as its HResult; the few it turns into other types are mapped back here; anything else counts as EIO.
    /// </summary>
    public static int Of(Exception e) => e switch
    {
        DiskImageException d => d.Errno,
        FileNotFoundException or DirectoryNotFoundException => ENOENT,
        UnauthorizedAccessException => EACCES,
        PathTooLongException => 36, // ENAMETOOLONG
        IOException { HResult: > 0 and < 4096 } io => io.HResult,
        _ => EIO,
    };

    /// <summary>strerror(3) text: "No space left on device".</summary>
    public static string Describe(int errno) => Marshal.GetPInvokeErrorMessage(errno);
}
