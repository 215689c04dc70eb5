namespace Vdisk.BlockIO;

/// <summary>QEMU's image locks on the file (see <see cref="FileLocks"/>); they go when the file is closed.</summary>
public sealed partial class FileBlockDevice
{
    private readonly object _lockGate = new();

    /// <summary>The file's handle, for tests that share its open file description with another process.</summary>
    internal Microsoft.Win32.SafeHandles.SafeFileHandle Handle => _handle;
    private FileLocks? _locks;

    public override void SetPermissions(ImagePermissions use, ImagePermissions share)
    {
        ThrowIfDisposed();
        if (!OperatingSystem.IsLinux()) return;
        lock (_lockGate) (_locks ??= new FileLocks(_handle, _path)).Set(use, share);
    }

    /// <summary>
    /// Drops the locks before the file is closed. Closing alone is not enough: a process that forks (to start any
    /// program) shares its open file descriptions with the child until the child calls exec, and the locks belong to
    /// the description, so they would outlive this close for that moment and make the next opener see a ghost user.
    /// </summary>
    private void ReleaseLocks()
    {
        if (!OperatingSystem.IsLinux()) return;
        lock (_lockGate)
        {
            try { _locks?.Release(); }
            catch (Images.DiskImageException) { /* closing the file drops them as well */ }
        }
    }

    public override ImagePermissions SharedWithOthers
    {
        get
        {
            if (!OperatingSystem.IsLinux()) return ImagePermissions.All;
            lock (_lockGate) return _locks?.Shared ?? ImagePermissions.All;
        }
    }

    public override void AddPermissions(ImagePermissions more)
    {
        ThrowIfDisposed();
        if (!OperatingSystem.IsLinux()) return;
        lock (_lockGate)
            if (_locks is { } held) held.Set(held.Used | more, held.Shared);
    }
}
