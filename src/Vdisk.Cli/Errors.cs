using Vdisk.Images;

namespace Vdisk.Cli;

/// <summary>Turns library exceptions into qemu's wording.</summary>
internal static class Errors
{
    /// <summary>"Could not open 'x.qcow2': Could not open 'x.qcow2': No such file or directory", as qemu-img says it.</summary>
    public static string OpenFailure(string file, Exception e) => $"Could not open '{file}': {Describe(e)}";

    /// <summary>The problem without the library's "path: " prefix, with "Could not open:" naming the file as qemu does.</summary>
    public static string Describe(Exception e)
    {
        if (e is not DiskImageException d) return e.Message;
        string problem = d.Problem;
        if (d.FilePath is not null && problem.StartsWith("Could not open: ", StringComparison.Ordinal))
            problem = $"Could not open '{d.FilePath}': " + problem["Could not open: ".Length..];
        return d.Offset is { } o && d.Kind != DiskImageErrorKind.OutOfBounds ? $"{problem} (offset 0x{o:x})" : problem;
    }

    /// <summary>The message with the file it concerns in front ("file: problem"), qemu-img create's shape.</summary>
    public static string WithFile(string file, Exception e) => $"{file}: {Describe(e)}";

    /// <summary>strerror() text for a failed request, as qemu-io and qemu-img bench print it.</summary>
    public static string StrError(Exception e) => e switch
    {
        // qemu's block layer answers an out-of-range request with EIO, not EINVAL.
        DiskImageException { Kind: DiskImageErrorKind.OutOfBounds } => "Input/output error",
        DiskImageException { Kind: DiskImageErrorKind.ReadOnly } => "Permission denied",
        DiskImageException d => d.Errno switch
        {
            22 => "Invalid argument",
            1 => "Operation not permitted",
            95 => "Operation not supported",
            28 => "No space left on device",
            _ => "Input/output error",
        },
        _ => "Input/output error",
    };

    /// <summary>qemu's two-line complaint about a size it cannot parse ("image size", "start offset", ...).</summary>
    public static string InvalidSize(string what) =>
        $"Invalid {what} specified. You may use k, M, G, T, P or E suffixes for\n" +
        $"{CliContext.Program}: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.";
}
