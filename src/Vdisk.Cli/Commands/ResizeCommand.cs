using Vdisk.Cli.Output;
using Vdisk.Cli.Parsing;
using Vdisk.Images;

namespace Vdisk.Cli.Commands;

/// <summary>vdisk resize [-f fmt] [-q] [--shrink] [--preallocation=off|metadata|falloc|full] file [+|-]size</summary>
internal static class ResizeCommand
{
    private static readonly LongOption[] Longs =
    {
        new("help", false, "h"), new("format", true, "f"), new("quiet", false, "q"), new("shrink", false, "shrink"),
        new("preallocation", true, "preallocation"),
    };

    public static int Run(CliContext ctx, IReadOnlyList<string> args)
    {
        // As qemu-img: the size is taken off the end first, so that "-1G" is not read as an option.
        if (args.Count < 2) throw new CliException("Expecting image file name and size", showTryHelp: true);
        string sizeText = args[^1];
        var parsed = GetOpt.Parse(args.Take(args.Count - 1).ToList(), "f:hq", Longs);
        string? format = null;
        bool quiet = false, shrink = false;
        string preallocation = "off";
        foreach (var (key, value) in parsed.Options)
        {
            switch (key)
            {
                case "h": Help.PrintUsage(ctx.Out); return 0;
                case "f": format = value; break;
                case "q": quiet = true; break;
                case "shrink": shrink = true; break;
                case "preallocation":
                    if (value is not ("off" or "metadata" or "falloc" or "full"))
                        throw new CliException($"Invalid preallocation mode: '{value}'");
                    preallocation = value;
                    break;
            }
        }
        if (parsed.Positionals.Count != 1) throw new CliException("Expecting image file name and size", showTryHelp: true);
        string file = parsed.Positionals[0];

        int sign = sizeText.StartsWith('+') ? 1 : sizeText.StartsWith('-') ? -1 : 0;
        if (Sizes.TryParse(sign == 0 ? sizeText : sizeText[1..], out long amount) != SizeParse.Ok || (sign != 0 && sizeText.Length > 1 && sizeText[1] is '+' or '-'))
            throw new CliException("Parameter 'size' expects a non-negative number below 2^64\n" +
                "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.");

        DiskImage image;
        // With its backing file, as qemu-img: a grow must know whether the backing file reaches past the old end.
        try { image = DiskImages.Open(file, new ImageOpenOptions { Format = format, ForResize = true }); }
        catch (IOException e) { throw new CliException(Errors.OpenFailure(file, e)); }
        using (image)
        {
            long size = sign == 0 ? amount : image.Size + sign * amount;
            if (size <= 0) throw new CliException("New image size must be positive");
            if (size < image.Size && !shrink)
            {
                ctx.Error("Use the --shrink option to perform a shrink operation.");
                ctx.Err.WriteLine($"{CliContext.Program}: warning: Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there.");
                return 1;
            }
            try { image.Resize(size, preallocation); }
            catch (IOException e) { throw new CliException(Errors.Describe(e)); }
        }
        if (!quiet) ctx.Out.WriteLine("Image resized.");
        return 0;
    }
}
