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

        // Which layer takes the data: found on a first, read-only look at the chain.
        string targetPath;
        using (var chain = ImageOpening.Open(file, format, CacheMode.Writeback, readOnly: true))
        {
            if (chain.Backing is null) throw new CliException("Image does not have a backing file");
            var found = baseName is null ? chain.Backing
                : FindInChain(chain, baseName) ?? throw new CliException($"Did not find '{baseName}' in the backing chain of '{file}'");
            targetPath = Path.GetFullPath(found.Path);
        }
        // Then the chain again, the top writable (held to the end, as qemu-img holds it, so that no one writes it
        // between the copy and the emptying) and the target writable inside it: one handle per file, so that the
        // image locks see no second user of the base, and the copy reads through the handle it writes.
        DiskImage? target = null;
        var options = new ImageOpenOptions
        {
            Format = format, Cache = cache,
            BackingOpener = (path, o) => Path.GetFullPath(path) == targetPath
                ? target = DiskImages.Open(path, o with { ReadOnly = false })
                : DiskImages.Open(path, o),
        };
        DiskImage top;
        try { top = DiskImages.Open(file, options); }
        catch (Exception e) when (e is IOException or NotImplementedException) { throw new CliException(Errors.OpenFailure(file, e)); }
        using (top)
        {
            var bar = new Progress(ctx.Out, progress);
            bar.Start(top.Size);
            try { ImageCommit.CopyIntoBase(top, target!, target!, bar.Add); }
            catch (IOException e) { throw new CliException($"Block job failed: {Errors.Describe(e)}"); }
            bar.End();
            // Only now, with the base durable, may the top let go of its clusters.
            if (!drop)
            {
                try { ImageCommit.EmptyTop(top); }
                catch (IOException e) { throw new CliException($"Could not empty {file}: {Errors.Describe(e)}"); }
            }
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
