using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Vdisk.Interop.Tests.Nbd;

/// <summary>
/// `vdisk serve` or `qemu-nbd` running in the background, ready once its pid file exists (both write it after
/// they listen). Disposing sends SIGTERM and waits; a server that does not exit in time is killed and the test fails.
/// </summary>
public sealed class NbdServerProcess : IDisposable
{
    private readonly Process _process;
    private readonly Task<string> _stderr;
    private bool _stopped;

    private NbdServerProcess(Process process, string pidFile)
    {
        _process = process;
        _stderr = process.StandardError.ReadToEndAsync();
        _ = process.StandardOutput.ReadToEndAsync();
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!File.Exists(pidFile) || new FileInfo(pidFile).Length == 0)
        {
            if (process.HasExited) throw new InvalidOperationException($"server exited with {process.ExitCode}: {_stderr.Result}");
            if (DateTime.UtcNow > deadline)
            {
                process.Kill(true);
                throw new TimeoutException("server did not start listening within 30 s");
            }
            Thread.Sleep(20);
        }
    }

    public int ExitCode => _process.ExitCode;
    public int Pid => _process.Id;
    public string StdErr => _stderr.Result;
    public bool HasExited => _process.HasExited;

    /// <summary>Starts `vdisk serve args... --pid-file=...`.</summary>
    public static NbdServerProcess Vdisk(TempDir dir, params string[] args) => Vdisk(dir, new Dictionary<string, string>(), args);

    /// <summary>
    /// The same with extra environment variables; VDISK_CLI, as for <see cref="Tools.Vdisk"/>, runs another build
    /// (the native one ./vdisk runs) in place of the JIT one built next to the tests.
    /// </summary>
    public static NbdServerProcess Vdisk(TempDir dir, IReadOnlyDictionary<string, string> environment, params string[] args)
    {
        var pid = dir.File("vdisk-" + Guid.NewGuid().ToString("N")[..6] + ".pid");
        var cli = Environment.GetEnvironmentVariable("VDISK_CLI");
        return string.IsNullOrEmpty(cli)
            ? Start("dotnet", [Path.Combine(AppContext.BaseDirectory, "Vdisk.Cli.dll"), "serve", $"--pid-file={pid}", .. args], pid, environment)
            : Start(cli, ["serve", $"--pid-file={pid}", .. args], pid, environment);
    }

    /// <summary>Starts `qemu-nbd args... --pid-file=...`.</summary>
    public static NbdServerProcess QemuNbd(TempDir dir, params string[] args)
    {
        var pid = dir.File("qemu-" + Guid.NewGuid().ToString("N")[..6] + ".pid");
        return Start("qemu-nbd", [$"--pid-file={pid}", .. args], pid);
    }

    private static NbdServerProcess Start(string program, string[] args, string pidFile, IReadOnlyDictionary<string, string>? environment = null)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (name, value) in environment ?? new Dictionary<string, string>()) psi.Environment[name] = value;
        return new NbdServerProcess(Process.Start(psi) ?? throw new InvalidOperationException($"could not start {program}"), pidFile);
    }

    /// <summary>A port nothing listens on right now, on loopback.</summary>
    public static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    /// <summary>Waits for the server to exit by itself.</summary>
    public bool WaitForExit(TimeSpan timeout) => _process.WaitForExit(timeout);

    /// <summary>SIGTERM, then the exit status (the server must exit cleanly within 20 s).</summary>
    public int Stop()
    {
        if (_stopped) return _process.ExitCode;
        _stopped = true;
        if (!_process.HasExited) Tools.Run("kill", "-TERM", _process.Id.ToString());
        if (!_process.WaitForExit(TimeSpan.FromSeconds(20)))
        {
            _process.Kill(true);
            throw new TimeoutException("server did not exit within 20 s of SIGTERM");
        }
        return _process.ExitCode;
    }

    /// <summary>SIGKILL: the server gets no chance to write back caches or close anything.</summary>
    public void KillHard()
    {
        _stopped = true;
        _process.Kill(entireProcessTree: true);
        _process.WaitForExit();
    }

    public void Dispose()
    {
        try { Stop(); }
        catch (TimeoutException) { }
        _process.Dispose();
    }
}
