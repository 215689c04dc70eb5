namespace Vdisk.Interop.Tests;

/// <summary>A scratch folder on a real file system (not tmpfs, so O_DIRECT and holes behave as on disks), removed on dispose.</summary>
public sealed class TempDir : IDisposable
{
    public TempDir()
    {
        var root = Environment.GetEnvironmentVariable("VDISK_TEST_TMP") ?? Path.Combine(Path.GetTempPath(), "vdisk-tests");
        Path_ = System.IO.Path.Combine(root, Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(Path_);
    }

    public string Path_ { get; }
    public string File(string name) => System.IO.Path.Combine(Path_, name);

    public void Dispose()
    {
        try { Directory.Delete(Path_, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
