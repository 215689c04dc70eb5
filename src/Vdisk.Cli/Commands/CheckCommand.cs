using System.Globalization;
using Vdisk.Cli.Output;
using Vdisk.Cli.Parsing;
using Vdisk.Images;

namespace Vdisk.Cli.Commands;

/// <summary>vdisk check [-q] [-f fmt] [--output=human|json] [-r leaks|all] [-T cache] [-U] file</summary>
internal static class CheckCommand
{
    private static readonly LongOption[] Longs =
    {
        new("help", false, "h"), new("format", true, "f"), new("output", true, "output"), new("repair", true, "r"),
        new("force-share", false, "U"), new("quiet", false, "q"),
    };

    public static int Run(CliContext ctx, IReadOnlyList<string> args)
    {
        var parsed = GetOpt.Parse(args, "hf:r:T:qU", Longs);
        string? format = null;
        bool json = false, quiet = false, forceShare = false;
        var repair = CheckRepair.None;
        var cache = BlockIO.CacheMode.Writeback;
        foreach (var (key, value) in parsed.Options)
        {
            switch (key)
            {
                case "h": Help.PrintUsage(ctx.Out); return 0;
                case "f": format = value; break;
                case "output": json = InfoCommand.ParseOutputFormat(value!); break;
                case "q": quiet = true; break;
                case "U": forceShare = true; break;
                case "T":
                    if (!BlockIO.CacheModes.TryParse(value!, out cache)) throw new CliException($"Invalid source cache option: {value}");
                    break;
                case "r":
                    repair = value switch
                    {
                        "leaks" => CheckRepair.Leaks,
                        "all" => CheckRepair.All,
                        _ => throw new CliException($"Unknown option value for -r (expecting 'leaks' or 'all'): {value}", showTryHelp: true),
                    };
                    break;
            }
        }
        if (parsed.Positionals.Count != 1) throw new CliException("Expecting one image file name", showTryHelp: true);
        string file = parsed.Positionals[0];

        DiskImage image;
        try
        {
            image = DiskImages.Open(file, new ImageOpenOptions
            {
                ReadOnly = repair == CheckRepair.None, Format = format, ForCheck = true, NoBacking = true, Cache = cache, ForceShare = forceShare,
            });
        }
        catch (Exception e) when (e is IOException)
        {
            throw new CliException(Errors.OpenFailure(file, e));
        }
        using (image)
        {
            ImageCheckResult result;
            try
            {
                result = image.Check(repair);
            }
            catch (DiskImageException e) when (e.Kind == DiskImageErrorKind.UnsupportedFeature)
            {
                if (!quiet || json) ctx.Error("This image format does not support checks");
                return 63;
            }
            foreach (var line in result.Messages) ctx.Err.WriteLine(line);
            int leaksFixed = result.LeaksFixed, corruptionsFixed = result.CorruptionsFixed;
            if (repair != CheckRepair.None && (leaksFixed > 0 || corruptionsFixed > 0))
            {
                if (!json && !quiet)
                {
                    ctx.Out.Write("The following inconsistencies were found and repaired:\n\n" +
                        $"    {leaksFixed} leaked clusters\n    {corruptionsFixed} corruptions\n\nDouble checking the fixed image now...\n");
                }
                result = image.Check(CheckRepair.None);
                foreach (var line in result.Messages) ctx.Err.WriteLine(line);
                result.LeaksFixed = leaksFixed;
                result.CorruptionsFixed = corruptionsFixed;
            }
            if (json) ctx.Out.WriteLine(QemuJson.Pretty(ToJson(result, file, image.FormatName)));
            else if (!quiet) ctx.Out.Write(ToHuman(result));
            return result.CheckErrors > 0 ? 1 : result.Corruptions > 0 ? 2 : result.Leaks > 0 ? 3 : 0;
        }
    }

    internal static string ToHuman(ImageCheckResult r)
    {
        var sb = new System.Text.StringBuilder();
        if (r.IsClean) sb.Append("No errors were found on the image.\n");
        else
        {
            if (r.Corruptions > 0)
                sb.Append($"\n{r.Corruptions} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n");
            if (r.Leaks > 0)
                sb.Append($"\n{r.Leaks} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n");
            if (r.CheckErrors > 0)
                sb.Append($"\n{r.CheckErrors} internal errors have occurred during the check.\n");
        }
        if (r.TotalClusters != 0 && r.AllocatedClusters != 0)
        {
            var c = CultureInfo.InvariantCulture;
            sb.Append(string.Format(c, "{0}/{1} = {2:F2}% allocated, {3:F2}% fragmented, {4:F2}% compressed clusters\n",
                r.AllocatedClusters, r.TotalClusters, r.AllocatedClusters * 100.0 / r.TotalClusters,
                r.FragmentedClusters * 100.0 / r.AllocatedClusters, r.CompressedClusters * 100.0 / r.AllocatedClusters));
        }
        if (r.ImageEndOffset != 0) sb.Append($"Image end offset: {r.ImageEndOffset}\n");
        return sb.ToString();
    }

    internal static JsonObject ToJson(ImageCheckResult r, string file, string format)
    {
        var o = new JsonObject();
        if (r.ImageEndOffset != 0) o.Add("image-end-offset", r.ImageEndOffset);
        if (r.TotalClusters != 0) o.Add("total-clusters", r.TotalClusters);
        o.Add("check-errors", r.CheckErrors);
        if (r.Corruptions != 0) o.Add("corruptions", r.Corruptions);
        if (r.Leaks != 0) o.Add("leaks", r.Leaks);
        if (r.CorruptionsFixed != 0) o.Add("corruptions-fixed", r.CorruptionsFixed);
        if (r.LeaksFixed != 0) o.Add("leaks-fixed", r.LeaksFixed);
        if (r.AllocatedClusters != 0) o.Add("allocated-clusters", r.AllocatedClusters);
        if (r.FragmentedClusters != 0) o.Add("fragmented-clusters", r.FragmentedClusters);
        if (r.CompressedClusters != 0) o.Add("compressed-clusters", r.CompressedClusters);
        o.Add("filename", file);
        o.Add("format", format);
        return o;
    }
}
