using System.Runtime.InteropServices;

namespace Vdisk.BlockIO;

/// <summary>
/// What statx(2) says of a file, for the two questions the BCL cannot answer: how many bytes it occupies (qemu-img
/// info's "disk size") and which file it is (device and inode, so that two names of one file are seen as one).
/// The statx layout is the same on every Linux architecture.
/// </summary>
public readonly partial record struct FileStatus(ulong Device, ulong Inode, long AllocatedBytes)
{
    private const int AtFdCwd = -100;
    private const uint StatxIno = 0x100, StatxBlocks = 0x400;
    private const int BufferSize = 256, InoOffset = 32, BlocksOffset = 48, DevMajorOffset = 136, DevMinorOffset = 140;

    /// <summary>The status of the file a path names (symbolic links followed), or null where statx cannot tell.</summary>
    public static unsafe FileStatus? Of(string path)
    {
        if (!OperatingSystem.IsLinux()) return null;
        byte* buffer = stackalloc byte[BufferSize];
        try
        {
            if (statx(AtFdCwd, path, 0, StatxIno | StatxBlocks, buffer) != 0) return null;
        }
        catch (EntryPointNotFoundException) { return null; }
        catch (DllNotFoundException) { return null; }
        uint mask = *(uint*)buffer;
        if ((mask & (StatxIno | StatxBlocks)) != (StatxIno | StatxBlocks)) return null;
        ulong device = ((ulong)*(uint*)(buffer + DevMajorOffset) << 32) | *(uint*)(buffer + DevMinorOffset);
        return new FileStatus(device, *(ulong*)(buffer + InoOffset), *(long*)(buffer + BlocksOffset) * 512);
    }

    /// <summary>
    /// Whether a file is there, following symbolic links (File.Exists says yes for a link to nothing, and a create
    /// through such a link makes the file, not the link).
    /// </summary>
    public static bool Exists(string path) => Of(path) is not null || (!OperatingSystem.IsLinux() && File.Exists(path));

    /// <summary>The file a path ends at after its symbolic links: what a create through the path made.</summary>
    public static string Resolve(string path) => new FileInfo(path).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? path;

    /// <summary>True when both paths name one existing file.</summary>
    public static bool SameFile(string a, string b) =>
        Of(a) is { } x && Of(b) is { } y ? x.Device == y.Device && x.Inode == y.Inode
            : Path.GetFullPath(a) == Path.GetFullPath(b) && File.Exists(a);

    [LibraryImport("libc", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8)]
    private static unsafe partial int statx(int dirfd, string path, int flags, uint mask, byte* buffer);
}
