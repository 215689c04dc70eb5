using System.Diagnostics;
using System.Globalization;
using Vdisk.BlockIO;
using Vdisk.Cli.Output;
using Vdisk.Cli.Parsing;
using Vdisk.Images;

namespace Vdisk.Cli.Commands;

/// <summary>
/// vdisk bench: qemu-img bench's sequential benchmark. <c>depth</c> workers share one request counter, each
/// with its own preallocated buffer, so the request loop allocates nothing beyond what the image API does.
/// </summary>
internal static class BenchCommand
{
    private static readonly LongOption[] Longs =
    {
        new("help", false, "h"), new("flush-interval", true, "flush-interval"), new("pattern", true, "pattern"),
        new("no-drain", false, "no-drain"), new("force-share", false, "U"), new("image-opts", false, "image-opts"),
    };

    internal sealed record Settings(
        long Count, int Depth, long Offset, int Size, long Step, bool Write, byte Pattern, long FlushInterval, bool Drain);

    public static int Run(CliContext ctx, IReadOnlyList<string> args)
    {
        var parsed = GetOpt.Parse(args, "hc:d:f:ni:o:qs:S:t:wU", Longs);
        long count = 75000, flushInterval = 0;
        int depth = 64, size = 4096;
        long offset = 0;
        long? step = null;
        bool write = false, quiet = false, drain = true, forceShare = false;
        byte pattern = 0;
        string? format = null;
        var cache = CacheMode.Writeback;
        foreach (var (key, value) in parsed.Options)
        {
            switch (key)
            {
                case "h": Help.PrintUsage(ctx.Out); return 0;
                case "c": count = ParseCount(value!, "Invalid request count specified", 0, int.MaxValue); break;
                case "d": depth = (int)ParseCount(value!, "Invalid queue depth specified", 1, int.MaxValue); break;
                case "f": format = value; break;
                case "n": break; // native AIO: vdisk always uses its own asynchronous I/O
                case "i":
                    if (value is not ("threads" or "native" or "io_uring")) throw new CliException($"Invalid aio option: {value}");
                    break;
                case "o": offset = ParseSize(value!, "offset", long.MaxValue); break;
                case "q": quiet = true; break;
                case "s": size = (int)ParseSize(value!, "buffer size", int.MaxValue); break;
                case "S": step = ParseSize(value!, "step size", int.MaxValue); break;
                case "t":
                    if (!CacheModes.TryParse(value!, out cache)) throw new CliException("Invalid cache mode");
                    break;
                case "w": write = true; break;
                case "U": forceShare = true; break;
                case "pattern": pattern = (byte)ParseCount(value!, "Invalid pattern byte specified", 0, 255); break;
                case "flush-interval": flushInterval = ParseCount(value!, "Invalid flush interval specified", 0, int.MaxValue); break;
                case "no-drain": drain = false; break;
                case "image-opts": throw new CliException("--image-opts is not supported");
            }
        }
        if (parsed.Positionals.Count != 1) throw new CliException("Expecting one image file name", showTryHelp: true);
        if (!write && flushInterval > 0) throw new CliException("--flush-interval is only available in write tests");
        if (flushInterval > 0 && flushInterval < depth) throw new CliException("Flush interval can't be smaller than depth");
        string file = parsed.Positionals[0];

        DiskImage image;
        try { image = DiskImages.Open(file, new ImageOpenOptions { ReadOnly = !write, Cache = cache, Format = format, Messages = ctx.Err.WriteLine, ForceShare = forceShare }); }
        catch (Exception e) when (e is IOException or NotImplementedException) { throw new CliException(Errors.OpenFailure(file, e)); }
        using (image)
        {
            var settings = new Settings(count, depth, offset, size, step ?? size, write, pattern, flushInterval, drain);
            if (!quiet)
            {
                ctx.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"Sending {count} {(write ? "write" : "read")} requests, {size} bytes each, {depth} in parallel (starting at offset {offset}, step size {settings.Step})"));
                if (flushInterval > 0) ctx.Out.WriteLine($"Sending flush every {flushInterval} requests");
            }
            var clock = Stopwatch.StartNew();
            try { new BenchRun(image, settings).RunAsync().GetAwaiter().GetResult(); }
            catch (IOException e) { throw new CliException($"Failed request: {Errors.StrError(e)}"); }
            if (!quiet) ctx.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Run completed in {clock.Elapsed.TotalSeconds:0.000} seconds."));
        }
        return 0;
    }

    /// <summary>qemu_strtoul's decimal or 0x hex. A depth of 0 is refused: qemu-img would spin forever on it.</summary>
    private static long ParseCount(string text, string error, long min, long max)
    {
        string t = text.Trim();
        long value;
        bool ok = t.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? long.TryParse(t[2..], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value)
            : long.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out value);
        if (!ok || value < min || value > max)
            throw new CliException(error);
        return value;
    }

    private static long ParseSize(string text, string what, long max)
    {
        var result = Sizes.TryParse(text, out long value);
        if (result == SizeParse.Invalid)
            throw new CliException(Errors.InvalidSize(what));
        if (result == SizeParse.TooLarge || value > max)
            throw new CliException($"Invalid {what} specified. Must be between 0 and {max}.");
        return value;
    }
}
