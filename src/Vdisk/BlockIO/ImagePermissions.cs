namespace Vdisk.BlockIO;

/// <summary>
/// What a user of an image file does with it, and what it lets others do: QEMU's block permissions, which its file
/// driver turns into byte-range locks that every QEMU process and Vdisk see (<see cref="FileLocks"/>).
/// </summary>
[Flags]
public enum ImagePermissions
{
    None = 0,
    /// <summary>Reads see consistent data: nobody may change it behind the reader's back, unless shared.</summary>
    ConsistentRead = 1,
    Write = 2,
    /// <summary>Writes that leave the guest-visible content as it was (e.g. a block job copying data down).</summary>
    WriteUnchanged = 4,
    Resize = 8,
    All = ConsistentRead | Write | WriteUnchanged | Resize,
}

/// <summary>Ready-made sharing policies, each the one a QEMU tool uses.</summary>
public static class ImageSharing
{
    /// <summary>Others may read while this user has the image open, no more: what qemu-img convert shares of its sources.</summary>
    public const ImagePermissions ReadersOnly = ImagePermissions.ConsistentRead | ImagePermissions.WriteUnchanged;

    /// <summary>Others may do whatever the format allows: QEMU's tools' default (a raw image then shares writes).</summary>
    public const ImagePermissions AsFormatAllows = ImagePermissions.All;

    /// <summary>What qemu-nbd shares: everything but resizing.</summary>
    public const ImagePermissions AllButResize = ImagePermissions.All & ~ImagePermissions.Resize;

    /// <summary>QEMU's name of a permission, as its lock errors say it ("write", "consistent read", ...).</summary>
    public static string Describe(ImagePermissions permission) => permission switch
    {
        ImagePermissions.ConsistentRead => "consistent read",
        ImagePermissions.Write => "write",
        ImagePermissions.WriteUnchanged => "write unchanged",
        ImagePermissions.Resize => "resize",
        _ => permission.ToString(),
    };
}
