using Vdisk.BlockIO;
using Vdisk.Cli.Output;
using Vdisk.Cli.Parsing;
using Vdisk.Images;

namespace Vdisk.Cli.Ops;

/// <summary>Opening images and parsing the options the image-copying commands share, with qemu-img's messages.</summary>
internal static class ImageOpening
{
    public static DiskImage Open(string file, string? format, CacheMode cache, bool readOnly, bool noBacking = false, string? snapshot = null,
        bool forceShare = false, ImagePermissions share = ImageSharing.AsFormatAllows)
    {
        try
        {
            return DiskImages.Open(file, new ImageOpenOptions
            {
                ReadOnly = readOnly, Format = format, Cache = cache, NoBacking = noBacking, Snapshot = snapshot, ForceShare = forceShare, Share = share,
            });
        }
        catch (Exception e) when (e is IOException or NotImplementedException)
        {
            throw new CliException(Errors.OpenFailure(file, e));
        }
    }

    /// <summary>qemu-img's -l: 'snapshot.id=ID', 'snapshot.name=NAME' (comma-separated, the ID wins) or a bare ID or name.</summary>
    public static string ParseSnapshotParam(string text)
    {
        if (!text.StartsWith("snapshot.", StringComparison.Ordinal)) return text;
        string? id = null, name = null;
        foreach (var (key, value) in OptionList.Parse(text))
        {
            if (key == "snapshot.id") id = value;
            else if (key == "snapshot.name") name = value;
            else throw new CliException($"Invalid parameter '{key}'");
        }
        return id ?? name ?? throw new CliException("Failed in parsing snapshot param '" + text + "'");
    }

    public static CacheMode ParseCache(string text, string what = "cache") =>
        CacheModes.TryParse(text, out var mode) ? mode : throw new CliException($"Invalid {what} option: {text}");

    /// <summary>qemu-img's -S: a multiple of 512 up to 16 MiB; 0 turns zero detection off.</summary>
    public static long ParseSparse(string text)
    {
        if (Sizes.TryParse(text, out long v) != SizeParse.Ok || v % 512 != 0 || v > 16L << 20)
            throw new CliException("Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. " +
                "Select 0 to disable sparse detection (fully allocates output).");
        return v;
    }

    public static void TryDelete(string file)
    {
        try { File.Delete(file); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}
