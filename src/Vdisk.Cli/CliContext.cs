namespace Vdisk.Cli;

/// <summary>
/// Where a command writes, and how it crashes on purpose. Tests pass StringWriters and an abort hook that
/// throws instead of killing the test host.
/// </summary>
internal sealed class CliContext(TextWriter stdout, TextWriter stderr, Action? abort = null)
{
    public const string Program = "vdisk";

    public TextWriter Out { get; } = stdout;
    public TextWriter Err { get; } = stderr;

    /// <summary>Ends the process at once, like abort(3): nothing is flushed or closed.</summary>
    public Action Abort { get; } = abort ?? (() => throw new CliAbortException());

    /// <summary>"vdisk: message" on stderr, the shape of qemu's error_report().</summary>
    public void Error(string message) => Err.WriteLine($"{Program}: {message}");
}

/// <summary>A failure already worded for the user; the top level prints it and exits with <see cref="ExitCode"/>.</summary>
internal sealed class CliException(string message, int exitCode = 1, bool showTryHelp = false) : Exception(message)
{
    public int ExitCode { get; } = exitCode;
    /// <summary>Follow the message with "Try 'vdisk --help' for more information", as qemu-img does for usage errors.</summary>
    public bool ShowTryHelp { get; } = showTryHelp;
}

/// <summary>Thrown by the default abort hook; <see cref="CommandLine.Run"/> turns it into exit status 134.</summary>
internal sealed class CliAbortException : Exception;
