using Vdisk.BlockIO;
using Vdisk.Cli.Ops;
using Vdisk.Cli.Output;
using Vdisk.Cli.Parsing;
using Vdisk.Images;

namespace Vdisk.Cli.Commands;

/// <summary>vdisk commit [-q] [-f fmt] [-t cache] [-b base] [-d] [-p] file</summary>
internal static class CommitCommand
{
    private static readonly LongOption[] Longs = { new("help", false, "h") };

    public static int Run(CliContext ctx, IReadOnlyList<string> args)
    {
        var parsed = GetOpt.Parse(args, "f:ht:b:dpqr:", Longs);
        string? format = null, baseName = null;
        bool drop = false, progress = false, quiet = false;
        var cache = CacheMode.Writeback;
        foreach (var (key, value) in parsed.Options)
        {
            switch (key)
            {
                case "h": Help.PrintUsage(ctx.Out); return 0;
                case "f": format = value; break;
                case "t": cache = ImageOpening.ParseCache(value!); break;
                case "b": baseName = value; drop = true; break; // -b implies -d: intermediates still need the top
                case "d": drop = true; break;
                case "p": progress = true; break;
                case "q": quiet = true; break;
            }
        }
        if (quiet) progress = false;
        if (parsed.Positionals.Count != 1) throw new CliException("Expecting one image file name", showTryHelp: true);
        string file = parsed.Positionals[0];

        using (var top = ImageOpening.Open(file, format, CacheMode.Writeback, readOnly: true))
        {
            if (top.Backing is null) throw new CliException("Image does not have a backing file");
            DiskImage target = top.Backing;
            if (baseName is not null)
                target = FindInChain(top, baseName) ?? throw new CliException($"Did not find '{baseName}' in the backing chain of '{file}'");
            using var baseImage = ImageOpening.Open(target.Path, target.FormatName, cache, readOnly: false);
            var bar = new Progress(ctx.Out, progress);
            bar.Start(top.Size);
            try { ImageCommit.CopyIntoBase(top, target, baseImage, bar.Add); }
            catch (IOException e) { throw new CliException($"Block job failed: {Errors.Describe(e)}"); }
            bar.End();
        }
        if (!drop)
        {
            using var top = ImageOpening.Open(file, format, cache, readOnly: false, noBacking: true);
            try { ImageCommit.EmptyTop(top); }
            catch (IOException e) { throw new CliException($"Could not empty {file}: {Errors.Describe(e)}"); }
        }
        if (!quiet) ctx.Out.WriteLine("Image committed.");
        return 0;
    }

    /// <summary>
    /// The backing file of some layer that <paramref name="name"/> names. As qemu-img, a relative name is taken
    /// relative to the folder of the layer whose backing file is being compared (backing file names are relative
    /// to their overlay), not to the current directory.
    /// </summary>
    private static DiskImage? FindInChain(DiskImage top, string name)
    {
        for (var layer = top; layer.Backing is { } below; layer = below)
        {
            string folder = Path.GetDirectoryName(Path.GetFullPath(layer.Path)) ?? "/";
            if (Path.GetFullPath(Path.Combine(folder, name)) == Path.GetFullPath(below.Path)) return below;
        }
        return null;
    }
}
