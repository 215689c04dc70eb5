using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using Microsoft.Win32.SafeHandles;

namespace Vdisk.BlockIO;

/// <summary>The few libc calls the BCL does not expose: fdatasync, fallocate, SEEK_DATA/SEEK_HOLE, open(O_DIRECT) and anonymous mmap.</summary>
[SupportedOSPlatform("linux")]
internal static partial class LinuxNative
{
    public const int FALLOC_FL_KEEP_SIZE = 0x01;
    public const int FALLOC_FL_PUNCH_HOLE = 0x02;
    public const int FALLOC_FL_ZERO_RANGE = 0x10;
    public const int SEEK_DATA = 3;
    public const int SEEK_HOLE = 4;
    public const int ENXIO = 6;
    public const int EINTR = 4;
    public const int EOPNOTSUPP = 95;
    public const int ENOSYS = 38;
    public const int EINVAL = 22;

    public const int PROT_READ = 0x1;
    public const int PROT_WRITE = 0x2;
    public const int MAP_PRIVATE = 0x02;
    public const int MAP_ANONYMOUS = 0x20;

    public const int O_RDONLY = 0x0;
    public const int O_RDWR = 0x2;
    public const int O_CREAT = 0x40;
    public const int O_CLOEXEC = 0x80000;
    // x86_64 and aarch64 differ; the runtime architecture picks the right value.
    public static int O_DIRECT => RuntimeInformation.ProcessArchitecture is Architecture.Arm64 or Architecture.Arm ? 0x10000 : 0x4000;

    [LibraryImport("libc", SetLastError = true)]
    public static partial int fdatasync(SafeFileHandle fd);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int fallocate(SafeFileHandle fd, int mode, long offset, long len);

    [LibraryImport("libc", SetLastError = true)]
    public static partial long lseek(SafeFileHandle fd, long offset, int whence);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags, int mode);

    [LibraryImport("libc", SetLastError = true)]
    public static unsafe partial void* mmap(void* address, nuint length, int protection, int flags, int fd, nint offset);

    [LibraryImport("libc", SetLastError = true)]
    public static unsafe partial int munmap(void* address, nuint length);
}
