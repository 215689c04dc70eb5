using System.Diagnostics;
using System.Runtime.InteropServices;
using Vdisk.BlockIO;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Tests.BlockIO;

/// <summary>Image locks go with the image, even when another process still shares the file's open description.</summary>
public partial class FileLocksTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vdisk-locks-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void ClosingAnImageReleasesItsLocksWhileAChildStillSharesTheFile()
    {
        var path = Path.Combine(_dir, "disk.qcow2");
        DiskImages.Create(path, "qcow2", new ImageCreateOptions { Size = 1 << 20 });
        var image = DiskImages.Open(path);
        // What a fork does for a moment (until the child's exec), kept here for as long as the child lives: the child
        // holds the same open file description, and with it the locks, unless they are released by name.
        var handle = ((FileBlockDevice)image.Device).Handle;
        Assert.Equal(0, fcntl((int)handle.DangerousGetHandle(), 2 /* F_SETFD */, 0)); // no close-on-exec
        using var child = Process.Start(new ProcessStartInfo("sleep", "600") { UseShellExecute = false })!;
        try
        {
            image.Dispose();
            using var again = DiskImages.Open(path); // no "Failed to get "write" lock" from a ghost
            Assert.False(again.IsReadOnly);
        }
        finally
        {
            child.Kill();
            child.WaitForExit();
        }
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fcntl(int fd, int command, int argument);
}
