using Vdisk.BlockIO;
using Vdisk.Images;

namespace Vdisk.Cli.Commands;

/// <summary>
/// qemu-nbd -s: a temporary qcow2 in /var/tmp whose backing file is the image, so writes never reach the image.
/// The overlay is deleted on dispose.
/// </summary>
internal sealed class SnapshotOverlay : IDisposable
{
    private SnapshotOverlay(string path) => Path = path;

    public string Path { get; }

    public static SnapshotOverlay Create(string image, string? format, CacheMode cache)
    {
        string backing = System.IO.Path.GetFullPath(image);
        string backingFormat;
        long size;
        try
        {
            using var baseImage = DiskImages.Open(backing, new ImageOpenOptions { ReadOnly = true, Format = format, Cache = cache });
            backingFormat = baseImage.FormatName;
            size = baseImage.Size;
        }
        catch (Exception e) when (e is IOException or NotImplementedException or UnauthorizedAccessException)
        {
            throw new CliException($"Failed to blk_new_open '{image}': {Errors.Describe(e)}");
        }
        // /var/tmp, as QEMU's temporary overlays: it survives a reboot less often than it holds a large file badly (tmpfs).
        string dir = Directory.Exists("/var/tmp") ? "/var/tmp" : System.IO.Path.GetTempPath();
        string path = System.IO.Path.Combine(dir, $"vdisk-nbd-snapshot-{Environment.ProcessId}-{Guid.NewGuid():N}.qcow2");
        try
        {
            DiskImages.Create(path, "qcow2", new ImageCreateOptions
            {
                Size = size,
                Options = new Dictionary<string, string> { ["backing_file"] = backing, ["backing_fmt"] = backingFormat },
            });
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            TryDelete(path);
            throw new CliException($"Could not create temporary overlay '{path}': {Errors.Describe(e)}");
        }
        return new SnapshotOverlay(path);
    }

    public void Dispose() => TryDelete(Path);

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
