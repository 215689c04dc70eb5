using Vdisk.BlockIO;

namespace Vdisk.Images;

/// <summary>
/// A format driver: probes, opens and creates images of one format. Drivers are registered explicitly in an
/// <see cref="ImageFormatRegistry"/>; there is no reflection scanning.
/// </summary>
public abstract class ImageFormat
{
    /// <summary>The name qemu-img uses (-f/-O): "raw", "qcow2", ...</summary>
    public abstract string Name { get; }

    /// <summary>How sure the driver is that the header is its format: 0 = no, 100 = magic matches. Raw answers 1.</summary>
    public abstract int Probe(ReadOnlySpan<byte> header, string? path);

    /// <summary>Opens an image on a device this call takes ownership of.</summary>
    public abstract DiskImage Open(BlockDevice device, ImageOpenOptions options);

    /// <summary>
    /// Refuses create options this format cannot take, before any file is touched (create runs it first, so a bad
    /// option never empties an existing file). <see cref="Create"/> checks them again.
    /// </summary>
    public virtual void CheckCreateOptions(ImageCreateOptions options, string path) { }

    /// <summary>Creates a new image on an empty device and returns nothing; open it afterwards.</summary>
    public abstract void Create(BlockDevice device, ImageCreateOptions options);

    /// <summary>
    /// What an open image of this format keeps from everyone else, whatever its user would share: a format with its
    /// own metadata in the file cannot let another writer or a resize under it (QEMU's rule for format drivers).
    /// </summary>
    public virtual ImagePermissions NeverShared => ImagePermissions.Write | ImagePermissions.Resize;

    /// <summary>A writable image of this format grows its file as it allocates, so it needs the resize permission.</summary>
    public virtual bool GrowsFile => true;

    /// <summary>Create options this format accepts (for error messages and help).</summary>
    public abstract IReadOnlyCollection<string> CreateOptionNames { get; }
}
