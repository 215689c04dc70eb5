using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using Microsoft.Win32.SafeHandles;
using Vdisk.Images;

namespace Vdisk.BlockIO;

/// <summary>
/// QEMU's image locking, byte for byte, so that QEMU and Vdisk see each other: open file description locks
/// (F_OFD_SETLK) of one byte each, shared (read) locks only. Byte 100+i says "I use permission i", byte 200+i says
/// "I do not let others have permission i" (i = bit number of <see cref="ImagePermissions"/>). A new user first takes
/// its own bytes, then tests (F_OFD_GETLK) the bytes of what it wants and of what it will not share, so two users
/// racing to open both see each other. Locks belong to the open file description: a second open of the same file in
/// this process conflicts like another process does, and closing the handle releases them.
/// </summary>
[SupportedOSPlatform("linux")]
internal sealed partial class FileLocks(SafeFileHandle handle, string path)
{
    private const int UseBase = 100, DenyBase = 200, PermissionCount = 4;
    private const int F_OFD_GETLK = 36, F_OFD_SETLK = 37;
    private const short F_RDLCK = 0, F_WRLCK = 1, F_UNLCK = 2;
    private const int EAGAIN = 11, EACCES = 13, EINVAL = 22, ENOSYS = 38;

    // The bytes held now: permissions used, and permissions denied to others.
    private ImagePermissions _used, _denied;
    private bool _unsupported;

    public ImagePermissions Used => _used;
    /// <summary>What the locks let others do; everything where the kernel has no locks to stop them.</summary>
    public ImagePermissions Shared => _unsupported ? ImagePermissions.All : ImagePermissions.All & ~_denied;

    /// <summary>
    /// Moves to using <paramref name="use"/> and sharing <paramref name="share"/>. On a conflict the locks held before
    /// are restored and a <see cref="DiskImageErrorKind.Locked"/> error names the first permission in the way, in
    /// QEMU's words (<c>Failed to get "write" lock</c>, <c>Failed to get shared "write" lock</c>).
    /// </summary>
    public void Set(ImagePermissions use, ImagePermissions share)
    {
        if (_unsupported) return;
        var deny = ImagePermissions.All & ~share;
        var (oldUse, oldDeny) = (_used, _denied);
        try
        {
            // Hold the union while testing, as QEMU does: a racing opener then sees at least one of our states.
            Apply(oldUse | use, oldDeny | deny);
            if (_unsupported) return;
            Test(use, deny);
            Apply(use, deny);
        }
        catch (DiskImageException) when (!_unsupported)
        {
            try { Apply(oldUse, oldDeny); } catch (DiskImageException) { /* the first error is the one to report */ }
            throw;
        }
    }

    /// <summary>Unlocks every byte held (F_UNLCK through this handle releases them for the whole open file description).</summary>
    public void Release()
    {
        if (!_unsupported) Apply(ImagePermissions.None, ImagePermissions.None);
    }

    private void Apply(ImagePermissions use, ImagePermissions deny)
    {
        for (int i = 0; i < PermissionCount; i++)
        {
            var bit = (ImagePermissions)(1 << i);
            Hold(UseBase + i, (use & bit) != 0, (_used & bit) != 0, bit, ref _used);
            Hold(DenyBase + i, (deny & bit) != 0, (_denied & bit) != 0, bit, ref _denied);
            if (_unsupported) return;
        }
    }

    private void Hold(int offset, bool wanted, bool held, ImagePermissions bit, ref ImagePermissions state)
    {
        if (wanted == held) return;
        if (!Fcntl(F_OFD_SETLK, wanted ? F_RDLCK : F_UNLCK, offset, out _)) return;
        state = wanted ? state | bit : state & ~bit;
    }

    private void Test(ImagePermissions use, ImagePermissions deny)
    {
        // Everything we use must not be denied by anyone; then nothing we deny may be in use by anyone.
        for (int i = 0; i < PermissionCount; i++)
        {
            var bit = (ImagePermissions)(1 << i);
            if ((use & bit) != 0 && HeldByOthers(DenyBase + i))
                throw Conflict($"Failed to get \"{ImageSharing.Describe(bit)}\" lock");
        }
        for (int i = 0; i < PermissionCount; i++)
        {
            var bit = (ImagePermissions)(1 << i);
            if ((deny & bit) != 0 && HeldByOthers(UseBase + i))
                throw Conflict($"Failed to get shared \"{ImageSharing.Describe(bit)}\" lock");
        }
    }

    /// <summary>Whether an open file description other than ours holds a lock on the byte (what a write lock there would conflict with).</summary>
    private bool HeldByOthers(int offset) => Fcntl(F_OFD_GETLK, F_WRLCK, offset, out short found) && found != F_UNLCK;

    private DiskImageException Conflict(string problem) => new(DiskImageErrorKind.Locked, path, problem, null, null, 11 /* EAGAIN */);

    /// <summary>One fcntl call on one byte; false when the file system has no OFD locks, which turns locking off for this file.</summary>
    private unsafe bool Fcntl(int command, short type, int offset, out short foundType)
    {
        var lk = new Flock { Type = type, Whence = 0, Start = offset, Length = 1, Pid = 0 };
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            while (true)
            {
                if (fcntl((int)handle.DangerousGetHandle(), command, &lk) == 0)
                {
                    foundType = lk.Type;
                    return true;
                }
                int errno = Marshal.GetLastPInvokeError();
                if (errno == 4 /* EINTR */) continue;
                if (errno is EINVAL or ENOSYS)
                {
                    // A kernel without OFD locks (before Linux 3.15): QEMU's locking=auto uses the image unlocked.
                    _unsupported = true;
                    foundType = F_UNLCK;
                    return false;
                }
                // A file system that refuses the lock (ENOLCK on some NFS setups) fails the open, as in QEMU; so does a
                // byte someone holds a write lock on (no QEMU does, but another program may).
                throw new DiskImageException(errno is EAGAIN or EACCES ? DiskImageErrorKind.Locked : DiskImageErrorKind.Io, path,
                    $"Failed to lock byte {offset}: {HostErrno.Describe(errno)}", null, null, errno);
            }
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
    }

    /// <summary>struct flock on Linux x86_64 and aarch64: l_type, l_whence (shorts), l_start, l_len (off_t), l_pid.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct Flock
    {
        public short Type;
        public short Whence;
        public long Start;
        public long Length;
        public int Pid;
    }

    [LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    private static unsafe partial int fcntl(int fd, int command, Flock* lk);
}
