using Vdisk.BlockIO;

namespace Vdisk.Images;

/// <summary>Entry points: open an image by path (probing its format) and create one by format name.</summary>
public static class DiskImages
{
    /// <summary>Opens an image file and its backing chain.</summary>
    public static DiskImage Open(string path, ImageOpenOptions? options = null)
    {
        options ??= new ImageOpenOptions();
        if (string.IsNullOrEmpty(path))
            throw new DiskImageException(DiskImageErrorKind.InvalidArgument, path, "The 'file' block driver requires a file name");
        if (options.ForceShare && !options.ReadOnly)
            throw new DiskImageException(DiskImageErrorKind.InvalidArgument, path, "force-share=on can only be used with read-only images");
        string full = System.IO.Path.GetFullPath(path);
        if (options.OpenChain.Contains(full))
            throw new DiskImageException(DiskImageErrorKind.InvalidFormat, path, "Backing file chain creates an infinite loop");
        var device = FileBlockDevice.Open(path, options.ReadOnly, options.Cache);
        try
        {
            var format = options.Format is null ? options.Registry.Probe(device) : options.Registry.Get(options.Format);
            device.SetPermissions(Use(format, options), Share(format, options));
            return format.Open(device, options with { OpenChain = options.OpenChain.Append(full).ToArray(), FormatProbed = options.Format is null });
        }
        catch
        {
            device.Dispose();
            throw;
        }
    }

    /// <summary>What an open of this format with these options uses: reads always; writes, and resize for a format that grows its file.</summary>
    private static ImagePermissions Use(ImageFormat format, ImageOpenOptions options)
    {
        var use = ImagePermissions.ConsistentRead;
        if (!options.ReadOnly) use |= ImagePermissions.Write | (format.GrowsFile || options.ForResize ? ImagePermissions.Resize : ImagePermissions.None);
        return use;
    }

    /// <summary>
    /// What it lets others do: anything with force-share; else the caller's choice (for a backing file, QEMU's rule
    /// for copy-on-write children: everything if the image above shares writes, readers only if not), narrowed by
    /// the format.
    /// </summary>
    private static ImagePermissions Share(ImageFormat format, ImageOpenOptions options)
    {
        if (options.ForceShare) return ImagePermissions.All;
        var share = options.Share;
        if (options.AsBacking) share = (share & ImagePermissions.Write) != 0 ? ImagePermissions.All : ImageSharing.ReadersOnly;
        return share & ~format.NeverShared;
    }

    /// <summary>Creates an image file of the given format; it is closed again, open it with <see cref="Open"/>.</summary>
    /// <remarks>
    /// A create that fails part way (a full disk, a bad option found late) leaves no half-made image: a file it
    /// created is removed, an existing file it was emptying is left empty. A file another user holds is refused
    /// before anything is changed (<see cref="DiskImageErrorKind.Locked"/>).
    /// </remarks>
    public static void Create(string path, string format, ImageCreateOptions options)
    {
        var driver = options.Registry.Get(format);
        if (string.IsNullOrEmpty(path))
            throw new DiskImageException(DiskImageErrorKind.NotFound, path, "Could not create: No such file or directory");
        driver.CheckCreateOptions(options, path);
        if (options.Get("backing_file") is { } backing && SameFile(path, ResolveBackingPath(path, backing)))
            throw new DiskImageException(DiskImageErrorKind.InvalidArgument, path, "Error: Trying to create an image with the same filename as the backing file");
        bool existed = FileStatus.Exists(path);
        var device = FileBlockDevice.Create(path);
        try
        {
            driver.Create(device, options);
            device.Flush();
        }
        catch
        {
            Discard(device, path, existed);
            throw;
        }
        device.Dispose();
    }

    /// <summary>The same file, or, for one that does not exist yet, the same full path.</summary>
    private static bool SameFile(string a, string b) => FileStatus.SameFile(a, b) || System.IO.Path.GetFullPath(a) == System.IO.Path.GetFullPath(b);

    private static void Discard(FileBlockDevice device, string path, bool existed)
    {
        try
        {
            if (existed) device.SetLength(0);
        }
        catch (IOException) { /* the failure being reported matters more */ }
        finally { device.Dispose(); }
        if (!existed)
        {
            try { System.IO.File.Delete(FileStatus.Resolve(path)); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>Resolves a backing file name the way QEMU does: relative names are relative to the image's folder.</summary>
    public static string ResolveBackingPath(string imagePath, string backingName)
    {
        if (System.IO.Path.IsPathRooted(backingName) || backingName.Contains("://")) return backingName;
        var dir = System.IO.Path.GetDirectoryName(imagePath);
        return string.IsNullOrEmpty(dir) ? backingName : System.IO.Path.Combine(dir, backingName);
    }

    /// <summary>Opens the backing file named in an image, read-only, with the same cache mode (through <see cref="ImageOpenOptions.BackingOpener"/> if set).</summary>
    public static DiskImage OpenBacking(string imagePath, string backingName, string? backingFormat, ImageOpenOptions parent)
    {
        var resolved = ResolveBackingPath(imagePath, backingName);
        var options = parent with { ReadOnly = true, Format = backingFormat, NoBacking = false, Snapshot = null, Options = new Dictionary<string, string>(), AsBacking = true };
        try
        {
            return parent.BackingOpener is { } open ? open(resolved, options) : Open(resolved, options);
        }
        catch (DiskImageException e) when (e.Kind == DiskImageErrorKind.NotFound)
        {
            throw new DiskImageException(DiskImageErrorKind.NotFound, imagePath,
                $"Could not open backing file: Could not open '{resolved}': No such file or directory");
        }
        catch (DiskImageException e) when (e.Kind == DiskImageErrorKind.Locked)
        {
            // QEMU's words: the lock is the backing file's, which the hint after it names.
            throw new DiskImageException(DiskImageErrorKind.Locked, e.FilePath, "Could not open backing file: " + e.Problem, e.Offset, e, e.Errno);
        }
    }
}
