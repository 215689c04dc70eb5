namespace Vdisk.Images;

/// <summary>How one layer of an image maps a guest range.</summary>
public enum LayerAllocation
{
    /// <summary>Not allocated here: the next layer down (the backing file) decides, or zeros if there is none.</summary>
    Unallocated,
    /// <summary>Reads as zeros, decided by this layer (a zero cluster, a hole in a raw file).</summary>
    Zero,
    /// <summary>Data stored by this layer.</summary>
    Data,
}

/// <summary>
/// One layer's answer for [Offset, Offset+Length): what it holds, and where in its file (-1 if nowhere).
/// <see cref="ReadsZero"/> marks data known to read as zeros (a preallocated cluster over a hole in the file).
/// </summary>
public readonly record struct LayerStatus(long Offset, long Length, LayerAllocation Allocation, long HostOffset = -1, bool Compressed = false, bool ReadsZero = false);

/// <summary>
/// The allocation status of a guest range across the whole backing chain, in qemu-img map's terms:
/// <see cref="Present"/> (some layer allocates it), <see cref="Zero"/>, <see cref="Data"/>, the <see cref="Depth"/>
/// of the layer that decided (0 = the top image) and the host offset in that layer's file when it has one.
/// </summary>
public readonly record struct BlockStatus(long Offset, long Length, bool Present, bool Zero, bool Data, int Depth, long HostOffset, string? File, bool Compressed = false)
{
    public bool HasHostOffset => HostOffset >= 0;
}
