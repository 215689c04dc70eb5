using System.Globalization;
using Vdisk.Cli.Output;
using Vdisk.Cli.Parsing;
using Vdisk.Images;

namespace Vdisk.Cli.Commands;

/// <summary>vdisk create [-f fmt] [-b backing [-F backing_fmt]] [-u] [-o opt=val,...] [-q] file [size]</summary>
internal static class CreateCommand
{
    private static readonly LongOption[] Longs = { new("help", false, "h") };

    public static int Run(CliContext ctx, IReadOnlyList<string> args)
    {
        var parsed = GetOpt.Parse(args, "F:b:f:ho:qu", Longs);
        string format = "raw";
        string? backing = null, backingFormat = null;
        bool unsafeBacking = false, quiet = false;
        var optionTexts = new List<string>();
        foreach (var (key, value) in parsed.Options)
        {
            switch (key)
            {
                case "h": Help.PrintUsage(ctx.Out); return 0;
                case "f": format = value!; break;
                case "b": backing = value; break;
                case "F": backingFormat = value; break;
                case "u": unsafeBacking = true; break;
                case "q": quiet = true; break;
                case "o": optionTexts.Add(value!); break;
            }
        }
        var registry = ImageFormatRegistry.Default;
        if (optionTexts.Any(OptionList.IsHelp))
        {
            PrintOptionHelp(ctx, registry.Find(format) ?? throw new CliException($"Unknown file format '{format}'"));
            return 0;
        }
        if (parsed.Positionals.Count == 0) throw new CliException("Expecting image file name", showTryHelp: true);
        if (parsed.Positionals.Count > 2) throw new CliException($"Unexpected argument: {parsed.Positionals[2]}", showTryHelp: true);
        string file = parsed.Positionals[0];

        long? size = null;
        if (parsed.Positionals.Count == 2) size = ParseSizeOperand(parsed.Positionals[1]);

        var driver = registry.Find(format) ?? throw new CliException($"{file}: Unknown file format '{format}'");

        var options = new List<KeyValuePair<string, string>>();
        foreach (var text in optionTexts)
            foreach (var (k, v) in OptionList.Parse(text)) OptionList.Set(options, k, v);
        foreach (var (k, _) in options)
            if (k != "size" && !driver.CreateOptionNames.Contains(k)) throw new CliException($"{file}: Invalid parameter '{k}'");

        if (options.FirstOrDefault(o => o.Key == "size").Value is { } sizeText)
        {
            if (size is not null) throw new CliException($"{file}: The image size must be specified only once");
            if (Sizes.TryParse(sizeText, out long fromOption) != SizeParse.Ok)
                throw new CliException($"{file}: Parameter 'size' expects a non-negative number below 2^64\n" +
                    "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.");
            size = fromOption;
        }
        if (backing is not null) OptionList.Set(options, "backing_file", backing);
        if (backingFormat is not null) OptionList.Set(options, "backing_fmt", backingFormat);
        backing = options.FirstOrDefault(o => o.Key == "backing_file").Value;
        backingFormat = options.FirstOrDefault(o => o.Key == "backing_fmt").Value;

        if (backing is not null)
        {
            if (Path.GetFullPath(DiskImages.ResolveBackingPath(file, backing)) == Path.GetFullPath(file))
                throw new CliException($"{file}: Error: Trying to create an image with the same filename as the backing file");
            if (!driver.CreateOptionNames.Contains("backing_file"))
                throw new CliException($"{file}: Backing file not supported for file format '{format}'");
            long? backingSize = CheckBacking(file, backing, backingFormat, unsafeBacking);
            size ??= backingSize;
        }
        if (size is null) throw new CliException($"{file}: Image creation needs a size parameter");

        OptionList.Set(options, "size", size.Value.ToString(CultureInfo.InvariantCulture));
        if (!quiet) ctx.Out.WriteLine($"Formatting '{file}', {CreateOptionTable.Describe(format, options)}");

        var driverOptions = options.Where(o => o.Key != "size").ToDictionary(o => o.Key, o => o.Value);
        try
        {
            // A create that fails leaves no half-made image (DiskImages.Create removes what it made).
            DiskImages.Create(file, format, new ImageCreateOptions { Size = size.Value, Options = driverOptions, Registry = registry });
        }
        catch (Exception e) when (e is IOException or ArgumentException or NotImplementedException or NotSupportedException)
        {
            throw new CliException(Errors.WithFile(file, e));
        }
        return 0;
    }

    internal static long ParseSizeOperand(string text) => Sizes.TryParse(text, out long size) switch
    {
        SizeParse.Ok => size,
        SizeParse.TooLarge => throw new CliException("Invalid image size specified. Must be between 0 and 9223372036854775807."),
        _ => throw new CliException(Errors.InvalidSize("image size")),
    };

    /// <summary>Opens the backing file as qemu-img does, to check it and to learn its size; null with -u.</summary>
    private static long? CheckBacking(string file, string backing, string? backingFormat, bool unsafeBacking)
    {
        if (backingFormat is null && unsafeBacking)
            throw new CliException($"{file}: Backing file specified without backing format");
        if (unsafeBacking) return null;
        string resolved = DiskImages.ResolveBackingPath(file, backing);
        try
        {
            // Force-shared, as qemu-img does: an overlay may be made of an image a VM is writing.
            using var image = DiskImages.Open(resolved, new ImageOpenOptions { ReadOnly = true, Format = backingFormat, NoBacking = true, ForceShare = true });
            if (backingFormat is null)
                throw new CliException($"{file}: Backing file specified without backing format\nDetected format of {image.FormatName}.");
            return image.Size;
        }
        catch (Exception e) when (e is IOException or NotImplementedException)
        {
            throw new CliException($"{file}: {Errors.Describe(e)}\nCould not open backing image.");
        }
    }

    private static void PrintOptionHelp(CliContext ctx, ImageFormat driver)
    {
        ctx.Out.WriteLine($"Supported {driver.Name} options:");
        foreach (var name in driver.CreateOptionNames.Prepend("size").Distinct())
            ctx.Out.WriteLine($"  {name}");
    }
}
