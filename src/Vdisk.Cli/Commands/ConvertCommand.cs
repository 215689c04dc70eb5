using System.Globalization;
using Vdisk.BlockIO;
using Vdisk.Cli.Ops;
using Vdisk.Cli.Output;
using Vdisk.Cli.Parsing;
using Vdisk.Images;

namespace Vdisk.Cli.Commands;

/// <summary>
/// vdisk convert [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-B backing [-F backing_fmt]]
/// [-o options] [-S sparse_size] [-r rate_limit] [-m num_coroutines] [-W] [--target-is-zero] filename [filename2 [...]] output_filename
/// </summary>
internal static class ConvertCommand
{
    private static readonly LongOption[] Longs =
    {
        new("help", false, "h"), new("target-is-zero", false, "target-is-zero"), new("force-share", false, "U"),
    };

    public static int Run(CliContext ctx, IReadOnlyList<string> args)
    {
        var parsed = GetOpt.Parse(args, "hf:O:B:CcF:o:l:S:pt:T:qnm:WUr:", Longs);
        string? format = null, backing = null, backingFormat = null;
        string outFormat = "raw";
        bool compress = false, progress = false, quiet = false, skipCreate = false, outOfOrder = false, targetIsZero = false, forceShare = false;
        var cache = CacheMode.Unsafe;
        var srcCache = CacheMode.Writeback;
        long sparse = 4096, rateLimit = 0;
        int workers = 8;
        string? snapshot = null;
        var optionTexts = new List<string>();
        foreach (var (key, value) in parsed.Options)
        {
            switch (key)
            {
                case "h": Help.PrintUsage(ctx.Out); return 0;
                case "f": format = value; break;
                case "O": outFormat = value!; break;
                case "B": backing = value; break;
                case "F": backingFormat = value; break;
                case "c": compress = true; break;
                case "o": optionTexts.Add(value!); break;
                case "l": snapshot = ImageOpening.ParseSnapshotParam(value!); break;
                case "S": sparse = ImageOpening.ParseSparse(value!); break;
                case "p": progress = true; break;
                case "q": quiet = true; break;
                case "n": skipCreate = true; break;
                case "t": cache = ImageOpening.ParseCache(value!); break;
                case "T": srcCache = ImageOpening.ParseCache(value!, "source cache"); break;
                case "U": forceShare = true; break;
                case "m":
                    if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out workers) || workers < 1 || workers > 16)
                        throw new CliException("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16");
                    break;
                case "W": outOfOrder = true; break;
                case "r":
                    rateLimit = Sizes.TryParse(value!, out long rate) == SizeParse.Ok ? rate : throw new CliException(Errors.InvalidSize("rate limit"));
                    break;
                case "target-is-zero": targetIsZero = true; break;
            }
        }
        if (quiet) progress = false;
        var registry = ImageFormatRegistry.Default;
        if (optionTexts.Any(OptionList.IsHelp))
        {
            var help = registry.Find(outFormat) ?? throw new CliException($"Unknown file format '{outFormat}'");
            ctx.Out.WriteLine($"Supported {help.Name} options:");
            foreach (var name in help.CreateOptionNames.Prepend("size").Distinct()) ctx.Out.WriteLine($"  {name}");
            return 0;
        }
        if (parsed.Positionals.Count < 2) throw new CliException("Must specify image file name", showTryHelp: true);
        if (targetIsZero && !skipCreate) throw new CliException("--target-is-zero requires use of -n flag");
        if (skipCreate && (backing is not null || optionTexts.Count > 0))
            throw new CliException("-n and -B/-o cannot be used together: the target exists already");
        string target = parsed.Positionals[^1];
        var driver = registry.Find(outFormat) ?? throw new CliException($"Unknown file format '{outFormat}'");
        if (compress && driver.Name != "qcow2") throw new CliException("Compression not supported for this file format");
        var options = CreateOptions(target, driver, optionTexts, backing, backingFormat);

        var images = new List<DiskImage>();
        DiskImage? output = null;
        bool created = false, existed = BlockIO.FileStatus.Exists(target);
        using var interrupt = new Interruption();
        try
        {
            foreach (var file in parsed.Positionals.Take(parsed.Positionals.Count - 1))
                // Nobody may write a source while it is copied (qemu-img's choice for convert alone).
                images.Add(ImageOpening.Open(file, format, srcCache, readOnly: true, snapshot: snapshot, forceShare: forceShare,
                    share: ImageSharing.ReadersOnly));
            var sources = new SourceSet(images);
            RefuseTargetInSources(target, outFormat, images);
            if (!skipCreate)
            {
                try
                {
                    DiskImages.Create(target, outFormat, new ImageCreateOptions { Size = sources.Size, Options = options, Registry = registry });
                }
                catch (Exception e) when (e is IOException or ArgumentException or NotSupportedException)
                {
                    throw new CliException($"{target}: error while converting {outFormat}: {Errors.Describe(e)}");
                }
                created = true;
            }
            output = ImageOpening.Open(target, outFormat, cache, readOnly: false);
            if (output.Size < sources.Size) throw new CliException("Target image is too small for the source data");
            var settings = new CopySettings
            {
                Compressed = compress, MinSparse = sparse, Workers = workers, OutOfOrder = outOfOrder, RateLimit = rateLimit,
                TargetHasBacking = output.Backing is not null || (skipCreate && output.BackingFileName is not null),
                TargetBackingSize = output.Backing?.Size ?? -1,
                HasZeroInit = targetIsZero || (created && output.Backing is null),
            };
            var bar = new Progress(ctx.Out, progress);
            new CopyEngine(sources, output, settings, bar).RunAsync(interrupt.Token).GetAwaiter().GetResult();
            bar.End();
            output.Dispose();
            output = null;
            return 0;
        }
        catch (Exception e) when (e is OperationCanceledException or IOException)
        {
            // Closing writes the metadata back, so a target of -n stays consistent; one this command made is discarded.
            CloseQuietly(output);
            output = null;
            if (created) DiscardTarget(target, existed);
            if (e is OperationCanceledException) throw new CliException("Interrupted; the conversion was stopped");
            if (e is CopyException copy) throw new CliException($"error while {copy.Operation} at byte {copy.GuestOffset}: {Errors.StrError(copy.InnerException!)}");
            throw new CliException($"error while converting: {Errors.Describe(e)}");
        }
        catch (CliException)
        {
            CloseQuietly(output);
            output = null;
            if (created) DiscardTarget(target, existed);
            throw;
        }
        finally
        {
            output?.Dispose();
            foreach (var image in images) image.Dispose();
        }
    }

    /// <summary>
    /// A source whose locks keep writers out already stops a target that is the same file, in qemu-img's words, when
    /// the target is created or opened. One that lets writers in (-U, or a file system without locks) does not, and
    /// qemu-img then truncates its own source and reports success; vdisk refuses instead.
    /// </summary>
    private static void RefuseTargetInSources(string target, string outFormat, List<DiskImage> sources)
    {
        if (!File.Exists(target)) return;
        foreach (var source in sources)
            for (var layer = source; layer is not null; layer = layer.Backing)
                if ((layer.Device.SharedWithOthers & ImagePermissions.Write) != 0 && BlockIO.FileStatus.SameFile(target, layer.Path))
                    throw new CliException($"{target}: error while converting {outFormat}: the target is one of the images being read ({layer.Path})");
    }

    /// <summary>
    /// A failed convert leaves no half-written target: one it created is removed, an existing file it wrote over is
    /// left empty (its old content went when the new image was made). Through a symbolic link, the file it points to
    /// is the one, not the link.
    /// </summary>
    private static void DiscardTarget(string target, bool existed)
    {
        string real = BlockIO.FileStatus.Resolve(target);
        try
        {
            if (existed) new FileStream(real, FileMode.Truncate, FileAccess.Write).Dispose();
            else File.Delete(real);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    private static void CloseQuietly(DiskImage? image)
    {
        try { image?.Dispose(); }
        catch (IOException) { }
    }

    /// <summary>The -o list for the new target, checked against what the format accepts, with -B/-F folded in.</summary>
    private static Dictionary<string, string> CreateOptions(string target, ImageFormat driver, List<string> texts, string? backing, string? backingFormat)
    {
        var options = new List<KeyValuePair<string, string>>();
        foreach (var text in texts)
            foreach (var (k, v) in OptionList.Parse(text)) OptionList.Set(options, k, v);
        foreach (var (k, _) in options)
            if (k != "size" && !driver.CreateOptionNames.Contains(k)) throw new CliException($"{target}: Invalid parameter '{k}'");
        if (backing is not null) OptionList.Set(options, "backing_file", backing);
        if (backingFormat is not null) OptionList.Set(options, "backing_fmt", backingFormat);
        var dict = options.Where(o => o.Key != "size").ToDictionary(o => o.Key, o => o.Value);
        if (dict.ContainsKey("backing_file"))
        {
            if (!driver.CreateOptionNames.Contains("backing_file"))
                throw new CliException($"{target}: Backing file not supported for file format '{driver.Name}'");
            if (!dict.ContainsKey("backing_fmt")) throw new CliException("Use of backing file requires explicit backing format");
        }
        return dict;
    }
}
