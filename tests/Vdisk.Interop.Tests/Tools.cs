using System.Diagnostics;

namespace Vdisk.Interop.Tests;

public sealed record ToolResult(int ExitCode, string StdOut, string StdErr)
{
    public override string ToString() => $"exit {ExitCode}\nstdout:\n{StdOut}\nstderr:\n{StdErr}";
}

/// <summary>Runs external programs (qemu-img, qemu-io, the vdisk CLI) and captures their output.</summary>
public static class Tools
{
    public static ToolResult Run(string program, params string[] args) => RunWithTimeout(program, args, TimeSpan.FromMinutes(5));

    public static ToolResult RunWithTimeout(string program, IEnumerable<string> args, TimeSpan timeout, string? workingDirectory = null)
    {
        var psi = new ProcessStartInfo(program)
        {
            WorkingDirectory = workingDirectory ?? "",
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {program}");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} {string.Join(' ', args)} did not finish in {timeout}");
        }
        return new ToolResult(p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>Runs the vdisk CLI built next to the tests.</summary>
    public static ToolResult Vdisk(params string[] args) => VdiskIn(null, args);

    /// <summary>Runs the vdisk CLI in another working directory (relative operands, as a user types them).</summary>
    public static ToolResult VdiskIn(string? workingDirectory, params string[] args)
    {
        // VDISK_CLI points at another build of the CLI (e.g. the native one ./vdisk runs) to test that instead.
        var cli = Environment.GetEnvironmentVariable("VDISK_CLI");
        if (!string.IsNullOrEmpty(cli)) return RunWithTimeout(cli, args, TimeSpan.FromMinutes(5), workingDirectory);
        var dll = Path.Combine(AppContext.BaseDirectory, "Vdisk.Cli.dll");
        return RunWithTimeout("dotnet", new[] { dll }.Concat(args), TimeSpan.FromMinutes(5), workingDirectory);
    }
}
