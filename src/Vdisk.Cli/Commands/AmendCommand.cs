using Vdisk.BlockIO;
using Vdisk.Cli.Ops;
using Vdisk.Cli.Output;
using Vdisk.Cli.Parsing;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;

namespace Vdisk.Cli.Commands;

/// <summary>vdisk amend [-f fmt] [-t cache] [-p] [-q] -o options file</summary>
internal static class AmendCommand
{
    private static readonly LongOption[] Longs = { new("help", false, "h"), new("force", false, "force") };
    private static readonly string[] CreationOnly =
    {
        "cluster_size", "extended_l2", "compression_type", "preallocation", "encryption", "encrypt.format", "data_file", "data_file_raw",
    };

    public static int Run(CliContext ctx, IReadOnlyList<string> args)
    {
        var parsed = GetOpt.Parse(args, "ho:f:t:pq", Longs);
        string? format = null;
        var cache = CacheMode.Writeback;
        bool progress = false, quiet = false;
        var options = new List<KeyValuePair<string, string>>();
        bool anyOptions = false;
        foreach (var (key, value) in parsed.Options)
        {
            switch (key)
            {
                case "h": Help.PrintUsage(ctx.Out); return 0;
                case "f": format = value; break;
                case "t": cache = ImageOpening.ParseCache(value!); break;
                case "p": progress = true; break;
                case "q": quiet = true; break;
                case "o":
                    anyOptions = true;
                    foreach (var (k, v) in OptionList.Parse(value!)) OptionList.Set(options, k, v);
                    break;
            }
        }
        if (quiet) progress = false;
        if (!anyOptions) throw new CliException("Must specify options (-o)", showTryHelp: true);
        if (parsed.Positionals.Count != 1) throw new CliException("Expecting one image file name", showTryHelp: true);
        string file = parsed.Positionals[0];

        using var image = ImageOpening.Open(file, format, cache, readOnly: false, noBacking: true);
        if (image is not Qcow2Image qcow2) throw new CliException($"Format driver '{image.FormatName}' does not support option amendment");
        var bar = new Progress(ctx.Out, progress);
        bar.Start(1);
        try { Amend(qcow2, options.ToDictionary(p => p.Key, p => p.Value)); }
        catch (IOException e) { throw new CliException(Errors.Describe(e)); }
        bar.Add(1);
        bar.End();
        return 0;
    }

    /// <summary>Validates everything first, as qemu-img does, so that a refused option changes nothing.</summary>
    private static void Amend(Qcow2Image image, Dictionary<string, string> o)
    {
        foreach (var key in o.Keys)
        {
            if (CreationOnly.Contains(key)) throw new CliException($"Invalid parameter '{key}'\nThis option is only supported for image creation");
            if (key is not ("compat" or "lazy_refcounts" or "refcount_bits" or "size" or "backing_file" or "backing_fmt"))
                throw new CliException($"Invalid parameter '{key}'");
        }
        var h = image.Header;
        uint version = o.TryGetValue("compat", out var compat) ? compat switch
        {
            "0.10" or "v2" => 2u,
            "1.1" or "v3" => 3u,
            _ => throw new CliException($"Unknown compatibility level {compat}"),
        } : h.Version;
        int refcountBits = h.RefcountBits;
        if (o.TryGetValue("refcount_bits", out var rb))
        {
            if (!int.TryParse(rb, out refcountBits) || refcountBits is < 1 or > 64 || (refcountBits & (refcountBits - 1)) != 0)
                throw new CliException("Refcount width must be a power of two and may not exceed 64 bits");
        }
        // qemu-img 7.2 refuses to amend the backing file (pointing to rebase); we do what was asked, as rebase -u would.
        string? backing = o.TryGetValue("backing_file", out var bf) ? (bf.Length == 0 ? null : bf) : h.BackingFile;
        string? backingFormat = o.TryGetValue("backing_fmt", out var bfmt) ? (bfmt.Length == 0 ? null : bfmt) : h.BackingFormat;
        if (backing is null) backingFormat = null;
        else if (backingFormat is null && o.ContainsKey("backing_file"))
            throw new CliException("Could not change the backing file: backing format must be specified (-o backing_fmt=...)");
        bool changeBacking = backing != h.BackingFile || backingFormat != h.BackingFormat;
        bool? lazy = o.TryGetValue("lazy_refcounts", out var lz) ? lz switch
        {
            "on" => true,
            "off" => false,
            _ => throw new CliException($"Parameter 'lazy_refcounts' expects 'on' or 'off'"),
        } : null;
        if (version == 2 && refcountBits != 16)
            throw new CliException(!o.ContainsKey("refcount_bits") ? "compat=0.10 requires refcount_bits=16"
                : "Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");
        if (version == 2 && lazy == true)
            throw new CliException("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
        long? size = null;
        if (o.TryGetValue("size", out var sizeText))
            size = Sizes.TryParse(sizeText, out long s) == SizeParse.Ok ? s
                : throw new CliException("Parameter 'size' expects a non-negative number below 2^64\n" +
                    "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.");

        if (version == 3) image.UpgradeToV3();
        if (refcountBits != h.RefcountBits) image.ChangeRefcountOrder(System.Numerics.BitOperations.Log2((uint)refcountBits));
        if (lazy is { } on) image.SetLazyRefcounts(on);
        if (version == 2) image.DowngradeToV2();
        if (size is { } newSize && newSize != image.Size) image.Resize(newSize);
        if (changeBacking)
            image.UpdateHeader(header =>
            {
                header.BackingFile = backing;
                header.BackingFormat = backingFormat;
            });
    }
}
