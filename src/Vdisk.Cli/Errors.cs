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
        foreach (var verb in new[] { "Could not open", "Could not create" })
            if (d.FilePath is not null && problem.StartsWith(verb + ": ", StringComparison.Ordinal))
                problem = $"{verb} '{d.FilePath}': " + problem[(verb.Length + 2)..];
        // qemu's hint after a lock conflict, on a line of its own without the program prefix.
        if (d.Kind == DiskImageErrorKind.Locked) return $"{problem}\nIs another process using the image [{d.FilePath}]?";
        return d.Offset is { } o && d.Kind != DiskImageErrorKind.OutOfBounds ? $"{problem} (offset 0x{o:x})" : problem;
    }

    /// <summary>The message with the file it concerns in front ("file: problem"), qemu-img create's shape.</summary>
    public static string WithFile(string file, Exception e) => $"{file}: {Describe(e)}";

    /// <summary>strerror() text for a failed request, as qemu-io and qemu-img bench print it.</summary>
    public static string StrError(Exception e) => e switch
    {
        // qemu's block layer answers an out-of-range request with EIO, not EINVAL.
        DiskImageException { Kind: DiskImageErrorKind.OutOfBounds } => "Input/output error",
        DiskImageException d => HostErrno.Describe(d.Errno),
        _ => HostErrno.Describe(HostErrno.Of(e)),
    };

    /// <summary>qemu's two-line complaint about a size it cannot parse ("image size", "start offset", ...).</summary>
    public static string InvalidSize(string what) =>
        $"Invalid {what} specified. You may use k, M, G, T, P or E suffixes for\n" +
        $"{CliContext.Program}: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.";
}
