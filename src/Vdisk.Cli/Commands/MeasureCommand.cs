using Vdisk.Cli.Ops;
using Vdisk.Cli.Output;
using Vdisk.Cli.Parsing;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;

namespace Vdisk.Cli.Commands;

/// <summary>vdisk measure [--output=human|json] [-O fmt] [-o options] [--size N | [-f fmt] file]</summary>
internal static class MeasureCommand
{
    private static readonly LongOption[] Longs =
    {
        new("help", false, "h"), new("output", true, "output"), new("size", true, "size"), new("force-share", false, "U"),
    };

    public static int Run(CliContext ctx, IReadOnlyList<string> args)
    {
        var parsed = GetOpt.Parse(args, "hf:O:o:l:U", Longs);
        string? format = null, sizeText = null, snapshot = null;
        string outFormat = "raw";
        bool json = false, forceShare = false;
        var optionTexts = new List<string>();
        foreach (var (key, value) in parsed.Options)
        {
            switch (key)
            {
                case "h": Help.PrintUsage(ctx.Out); return 0;
                case "f": format = value; break;
                case "O": outFormat = value!; break;
                case "o": optionTexts.Add(value!); break;
                case "l": snapshot = ImageOpening.ParseSnapshotParam(value!); break;
                case "output": json = InfoCommand.ParseOutputFormat(value!); break;
                case "size": sizeText = value; break;
                case "U": forceShare = true; break;
            }
        }
        string? file = parsed.Positionals.Count > 0 ? parsed.Positionals[0] : null;
        if (parsed.Positionals.Count > 1) throw new CliException($"Unexpected argument: {parsed.Positionals[1]}", showTryHelp: true);
        if (file is not null && sizeText is not null) throw new CliException("--size N cannot be used together with a filename.");
        if (file is null && sizeText is null) throw new CliException("Either --size N or one filename must be specified.");
        var driver = ImageFormatRegistry.Default.Find(outFormat) ?? throw new CliException($"Unknown file format '{outFormat}'");

        var options = new List<KeyValuePair<string, string>>();
        foreach (var text in optionTexts)
            foreach (var (k, v) in OptionList.Parse(text)) OptionList.Set(options, k, v);
        foreach (var (k, _) in options)
            if (k != "size" && !driver.CreateOptionNames.Contains(k))
                throw new CliException($"Invalid parameter '{k}'\n{CliContext.Program}: Invalid options for file format '{outFormat}'");
        var dict = options.ToDictionary(o => o.Key, o => o.Value);

        long virtualSize;
        long dataClusters = 0;
        bool bitmaps = false;
        int clusterSize = 65536;
        Qcow2CreateOptions? qcow2 = null;
        if (driver.Name == "qcow2")
        {
            try { qcow2 = Qcow2CreateOptions.Parse(new ImageCreateOptions { Options = dict }, ""); }
            catch (DiskImageException e) { throw new CliException(e.Problem); }
            clusterSize = qcow2.ClusterSize;
        }
        if (file is null)
        {
            if (Sizes.TryParse(sizeText!, out virtualSize) != SizeParse.Ok) throw new CliException(Errors.InvalidSize("image size"));
        }
        else
        {
            using var image = ImageOpening.Open(file, format, BlockIO.CacheMode.Writeback, readOnly: true, snapshot: snapshot, forceShare: forceShare);
            virtualSize = image.Size;
            dataClusters = CountDataClusters(image, clusterSize);
            // qemu reports the bitmaps line whenever source and target could both carry persistent bitmaps.
            bitmaps = image.FormatName == "qcow2" && qcow2 is { Version: >= 3 };
        }
        virtualSize = (virtualSize + 511) & ~511L;
        long required, fully;
        if (qcow2 is not null)
        {
            try { (required, fully) = Qcow2Measure.Compute(qcow2, virtualSize, dataClusters); }
            catch (DiskImageException e) { throw new CliException(e.Problem); }
        }
        else (required, fully) = (virtualSize, virtualSize);

        if (json)
        {
            var o = new JsonObject();
            if (bitmaps) o.Add("bitmaps", 0L);
            o.Add("required", required);
            o.Add("fully-allocated", fully);
            ctx.Out.WriteLine(QemuJson.Pretty(o));
        }
        else
        {
            ctx.Out.WriteLine($"required size: {required}");
            ctx.Out.WriteLine($"fully allocated size: {fully}");
            if (bitmaps) ctx.Out.WriteLine("bitmaps size: 0");
        }
        return 0;
    }

    /// <summary>Target clusters that would hold data: every cluster touched by a range that is data and not known zero.</summary>
    private static long CountDataClusters(DiskImage image, int clusterSize)
    {
        long count = 0, lastCounted = -1;
        for (long offset = 0; offset < image.Size;)
        {
            var s = image.GetBlockStatus(offset, image.Size - offset);
            if (s.Data && !s.Zero)
            {
                long first = Math.Max(offset / clusterSize, lastCounted + 1);
                long last = (offset + s.Length - 1) / clusterSize;
                if (last >= first) count += last - first + 1;
                lastCounted = Math.Max(lastCounted, last);
            }
            offset += s.Length;
        }
        return count;
    }
}
