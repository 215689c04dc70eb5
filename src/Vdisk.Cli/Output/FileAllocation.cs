using System.Runtime.InteropServices;
using Vdisk.BlockIO;

namespace Vdisk.Cli.Output;

/// <summary>
/// A file's allocated bytes, qemu-img info's "disk size" (du's figure). statx(2) gives st_blocks with one struct
/// layout on every Linux architecture; SEEK_DATA/SEEK_HOLE is the fallback, and it misses preallocated
/// (unwritten) extents, which count as holes there.
/// </summary>
internal static partial class FileAllocation
{
    public static long AllocatedBytes(BlockDevice device)
    {
        if (device is FileBlockDevice && OperatingSystem.IsLinux() && TryStatxBlocks(device.Name, out long blocks))
            return blocks * 512;
        return FromExtents(device);
    }

    internal static long FromExtents(BlockDevice device)
    {
        const long Block = 4096;
        long length = device.Length, total = 0, countedUpTo = 0;
        for (long offset = 0; offset < length;)
        {
            var extent = device.GetExtent(offset, length - offset);
            if (extent.Length <= 0) break;
            if (extent.IsData)
            {
                long start = Math.Max(offset / Block * Block, countedUpTo);
                long end = (offset + extent.Length + Block - 1) / Block * Block;
                if (end > start) total += end - start;
                countedUpTo = Math.Max(countedUpTo, end);
            }
            offset += extent.Length;
        }
        return total;
    }

    private const int AtFdCwd = -100;
    private const uint StatxBlocks = 0x400;
    private const int StatxBufferSize = 256;
    private const int StxBlocksOffset = 48;

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
