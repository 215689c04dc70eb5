namespace Vdisk.BlockIO;

/// <summary>QEMU's image locks on the file (see <see cref="FileLocks"/>); they go when the file is closed.</summary>
public sealed partial class FileBlockDevice
{
    private readonly object _lockGate = new();
    private FileLocks? _locks;

    public override void SetPermissions(ImagePermissions use, ImagePermissions share)
    {
        ThrowIfDisposed();
        if (!OperatingSystem.IsLinux()) return;
        lock (_lockGate) (_locks ??= new FileLocks(_handle, _path)).Set(use, share);
    }

    public override void AddPermissions(ImagePermissions more)
    {
        ThrowIfDisposed();
        if (!OperatingSystem.IsLinux()) return;
        lock (_lockGate)
            if (_locks is { } held) held.Set(held.Used | more, held.Shared);
    }
}
