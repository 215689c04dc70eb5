using Vdisk.Cli.Output;
using Vdisk.Cli.Parsing;
using Vdisk.Images;

namespace Vdisk.Cli.Commands;

/// <summary>vdisk info [-f fmt] [--output=human|json] [--backing-chain] [-U] file</summary>
internal static class InfoCommand
{
    private static readonly LongOption[] Longs =
    {
        new("help", false, "h"), new("format", true, "f"), new("output", true, "output"),
        new("backing-chain", false, "backing-chain"), new("force-share", false, "U"),
    };

    public static int Run(CliContext ctx, IReadOnlyList<string> args)
    {
        var parsed = GetOpt.Parse(args, "f:hU", Longs);
        string? format = null;
        bool json = false, chain = false, forceShare = false;
        foreach (var (key, value) in parsed.Options)
        {
            switch (key)
            {
                case "h": Help.PrintUsage(ctx.Out); return 0;
                case "f": format = value; break;
                case "output": json = ParseOutputFormat(value!); break;
                case "backing-chain": chain = true; break;
                case "U": forceShare = true; break;
            }
        }
        if (parsed.Positionals.Count != 1) throw new CliException("Expecting one image file name", showTryHelp: true);
        string file = parsed.Positionals[0];

        var infos = new List<ImageInfo>();
        string? next = file, nextFormat = format;
        var seen = new HashSet<string>();
        while (next is not null)
        {
            if (!seen.Add(next.Length == 0 ? next : Path.GetFullPath(next)))
                throw new CliException($"Backing file '{next}' creates an infinite loop.");
            ImageInfo info;
            using (var image = OpenForInfo(next, nextFormat, forceShare)) info = ImageInfo.From(image, next);
            infos.Add(info);
            if (!chain) break;
            next = info.FullBackingFilename;
            nextFormat = info.BackingFormat;
        }

        if (json)
            ctx.Out.WriteLine(QemuJson.Pretty(chain ? infos.Select(i => (object)i.ToJson()).ToList() : infos[0].ToJson()));
        else
            ctx.Out.Write(string.Join("\n", infos.Select(i => i.ToHuman())));
        return 0;
    }

    internal static bool ParseOutputFormat(string value) => value switch
    {
        "json" => true,
        "human" => false,
        _ => throw new CliException("--output must be used with human or json as argument."),
    };

    /// <summary>Read-only and without the backing chain: info describes each image by itself.</summary>
    internal static DiskImage OpenForInfo(string file, string? format, bool forceShare)
    {
        try
        {
            return DiskImages.Open(file, new ImageOpenOptions { ReadOnly = true, Format = format, NoBacking = true, ForceShare = forceShare });
        }
        catch (Exception e) when (e is IOException or NotImplementedException)
        {
            throw new CliException(Errors.OpenFailure(file, e));
        }
    }
}
