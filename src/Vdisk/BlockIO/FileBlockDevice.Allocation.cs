namespace Vdisk.BlockIO;

/// <summary>
/// Allocated size from statx(2)'s block count (<see cref="FileStatus"/>). SEEK_DATA/SEEK_HOLE (the fallback) misses
/// preallocated, unwritten extents: they count as holes there.
/// </summary>
public sealed partial class FileBlockDevice
{
    public override long GetAllocatedSize() => FileStatus.Of(Name)?.AllocatedBytes ?? base.GetAllocatedSize();
}
