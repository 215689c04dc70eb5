using System.Runtime.InteropServices;

namespace Vdisk.BlockIO;

/// <summary>
/// Allocated size from statx(2)'s block count, which has one struct layout on every Linux architecture.
/// SEEK_DATA/SEEK_HOLE (the fallback) misses preallocated, unwritten extents: they count as holes there.
/// </summary>
public sealed partial class FileBlockDevice
{
    private const int AtFdCwd = -100;
    private const uint StatxBlocks = 0x400;
    private const int StatxBufferSize = 256;
    private const int StxBlocksOffset = 48;

    public override long GetAllocatedSize()
    {
        if (OperatingSystem.IsLinux() && TryStatxBlocks(Name, out long blocks)) return blocks * 512;
        return base.GetAllocatedSize();
    }

    private static unsafe bool TryStatxBlocks(string path, out long blocks)
    {
        blocks = 0;
        byte* buffer = stackalloc byte[StatxBufferSize];
        try
        {
            if (statx(AtFdCwd, path, 0, StatxBlocks, buffer) != 0) return false;
        }
        catch (EntryPointNotFoundException) { return false; }
        catch (DllNotFoundException) { return false; }
        if ((*(uint*)buffer & StatxBlocks) == 0) return false;
        blocks = *(long*)(buffer + StxBlocksOffset);
        return true;
    }

    [LibraryImport("libc", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8)]
    private static unsafe partial int statx(int dirfd, string path, int flags, uint mask, byte* buffer);
}
