namespace Vdisk.Interop.Tests.HostErrors;

/// <summary>
/// A tmpfs of a few MiB mounted on a fresh folder, to run out of space for real (ENOSPC from the kernel, not from a
/// fault injector). Mounting needs root, or sudo without a password; without either the test fails and says so:
/// interop tests never skip.
/// </summary>
public sealed class SmallFileSystem : IDisposable
{
    public SmallFileSystem(long bytes)
    {
        Root = Path.Combine(Path.GetTempPath(), "vdisk-small-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(Root);
        var mount = Privileged("mount", "-t", "tmpfs", "-o", $"size={bytes},mode=1777", "tmpfs", Root);
        if (mount.ExitCode != 0)
        {
            Directory.Delete(Root);
            throw new InvalidOperationException(
                "these tests mount a small tmpfs to fill it up: run them as root or with password-less sudo\n" + mount);
        }
    }

    public string Root { get; }
    public string File(string name) => Path.Combine(Root, name);

    /// <summary>Takes every byte that is still free with a filler file, so that the next allocation fails with ENOSPC.</summary>
    public void FillUp(string name = "filler")
    {
        var chunk = new byte[64 << 10];
        Array.Fill(chunk, (byte)0xee);
        using var f = new FileStream(File(name), FileMode.Create, FileAccess.Write, FileShare.None, 1, FileOptions.None);
        foreach (int size in new[] { chunk.Length, 4096 })
        {
            try { while (true) f.Write(chunk, 0, size); }
            catch (IOException) { }
        }
    }

    public void Dispose()
    {
        Privileged("umount", "-l", Root);
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    private static ToolResult Privileged(string program, params string[] args) =>
        IsRoot()
            ? Tools.Run(program, args)
            : Tools.Run("sudo", new[] { "-n", program }.Concat(args).ToArray());

    private static bool IsRoot() => System.IO.File.Exists("/proc/self/status")
        && System.IO.File.ReadLines("/proc/self/status").Any(l => l.StartsWith("Uid:", StringComparison.Ordinal) && l.Split('\t', StringSplitOptions.RemoveEmptyEntries)[1] == "0");
}
