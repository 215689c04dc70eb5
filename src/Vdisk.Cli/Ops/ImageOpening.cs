using Vdisk.BlockIO;
using Vdisk.Cli.Output;
using Vdisk.Images;

namespace Vdisk.Cli.Ops;

/// <summary>Opening images and parsing the options the image-copying commands share, with qemu-img's messages.</summary>
internal static class ImageOpening
{
    public static DiskImage Open(string file, string? format, CacheMode cache, bool readOnly, bool noBacking = false)
    {
        try
        {
            return DiskImages.Open(file, new ImageOpenOptions { ReadOnly = readOnly, Format = format, Cache = cache, NoBacking = noBacking });
        }
        catch (Exception e) when (e is IOException or NotImplementedException)
        {
            throw new CliException(Errors.OpenFailure(file, e));
        }
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
