using System.Diagnostics;

namespace Vdisk.Interop.Tests.Locking;

/// <summary>
/// A tool that keeps an image open in the background: qemu-io or `vdisk io` reading commands from a standard input
/// that stays open, or an NBD server. Readiness is a fact, not a delay: an io tool has answered a first command (on
/// stderr, which neither buffers), a server has written its pid file, which both do after opening the image.
/// </summary>
public sealed class ImageHolder : IDisposable
{
    private const string Probe = "no-such-command";
    private readonly Process _process;

    private ImageHolder(Process process) => _process = process;

    /// <summary>qemu-io (or `vdisk io` when <paramref name="vdisk"/>) with the image open.</summary>
    public static ImageHolder Io(bool vdisk, string image, params string[] options)
    {
        var args = options.Append(image).ToArray();
        var holder = vdisk ? Start("dotnet", [VdiskDll, "io", .. args]) : Start("qemu-io", args);
        var p = holder._process;
        _ = p.StandardOutput.ReadToEndAsync();
        p.StandardInput.WriteLine(Probe);
        p.StandardInput.Flush();
        var seen = new System.Text.StringBuilder();
        while (p.StandardError.ReadLine() is { } line)
        {
            seen.AppendLine(line);
            if (line.Contains($"command \"{Probe}\" not found")) break;
        }
        if (!seen.ToString().Contains(Probe))
            throw new InvalidOperationException($"{p.StartInfo.FileName} {string.Join(' ', args)} did not open the image:\n{seen}");
        _ = p.StandardError.ReadToEndAsync();
        return holder;
    }

    /// <summary>qemu-nbd (or `vdisk serve`) exporting the image on a unix socket in <paramref name="dir"/>.</summary>
    public static ImageHolder Nbd(bool vdisk, TempDir dir, string image, params string[] options)
    {
        var name = Guid.NewGuid().ToString("N")[..8];
        string[] args = ["-k", dir.File(name + ".sock"), $"--pid-file={dir.File(name + ".pid")}", .. options, image];
        var holder = vdisk ? Start("dotnet", [VdiskDll, "serve", .. args]) : Start("qemu-nbd", args);
        var p = holder._process;
        var stderr = p.StandardError.ReadToEndAsync();
        _ = p.StandardOutput.ReadToEndAsync();
        var pid = dir.File(name + ".pid");
        while (!File.Exists(pid) || new FileInfo(pid).Length == 0)
        {
            if (p.WaitForExit(20)) throw new InvalidOperationException($"the server exited with {p.ExitCode}: {stderr.Result}");
        }
        return holder;
    }

    private static string VdiskDll => Path.Combine(AppContext.BaseDirectory, "Vdisk.Cli.dll");

    private static ImageHolder Start(string program, string[] args)
    {
        var psi = new ProcessStartInfo(program)
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        return new ImageHolder(Process.Start(psi) ?? throw new InvalidOperationException($"could not start {program}"));
    }

    public void Dispose()
    {
        try { _process.StandardInput.Close(); } catch (IOException) { }
        if (!_process.WaitForExit(5_000))
        {
            Tools.Run("kill", "-TERM", _process.Id.ToString());
            if (!_process.WaitForExit(30_000)) _process.Kill(true);
        }
        _process.Dispose();
    }
}

/// <summary>The OFD locks the kernel lists in /proc/locks for one file.</summary>
public static class LockTable
{
    /// <summary>Every byte offset some open file description holds a lock on.</summary>
    public static SortedSet<long> BytesOf(string path)
    {
        string inode = Tools.Run("stat", "-c", "%i", path).StdOut.Trim();
        var bytes = new SortedSet<long>();
        foreach (var line in File.ReadAllLines("/proc/locks"))
        {
            // "1: OFDLCK ADVISORY  READ  -1 08:01:1234 100 101"
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length < 8 || f[1] != "OFDLCK" || f[5].Split(':')[^1] != inode) continue;
            long start = long.Parse(f[6]), end = f[7] == "EOF" ? start : long.Parse(f[7]);
            for (long b = start; b <= end; b++) bytes.Add(b);
        }
        return bytes;
    }
}
