using Vdisk.BlockIO;
using Vdisk.Cli.Ops;
using Vdisk.Cli.Output;
using Vdisk.Cli.Parsing;
using Vdisk.Formats.Qcow2;
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

        string basePath;
        using (var top = ImageOpening.Open(file, format, CacheMode.Writeback, readOnly: true))
        {
            if (top.Backing is null) throw new CliException("Image does not have a backing file");
            var above = new List<DiskImage> { top };
            DiskImage target = top.Backing;
            if (baseName is not null)
            {
                string wanted = Path.GetFullPath(baseName);
                while (Path.GetFullPath(target.Path) != wanted)
                {
                    above.Add(target);
                    target = target.Backing ?? throw new CliException($"Did not find '{baseName}' in the backing chain of '{file}'");
                }
            }
            basePath = target.Path;
            using var baseImage = ImageOpening.Open(basePath, target.FormatName, cache, readOnly: false);
            var bar = new Progress(ctx.Out, progress);
            bar.Start(top.Size);
            try
            {
                if (baseImage.Size < top.Size) baseImage.Resize(top.Size);
                CopyAllocated(top, above, baseImage, bar);
                baseImage.Flush();
            }
            catch (IOException e) { throw new CliException($"Block job failed: {Errors.Describe(e)}"); }
            bar.End();
        }
        if (!drop)
        {
            using var top = ImageOpening.Open(file, format, cache, readOnly: false, noBacking: true);
            try
            {
                if (top is Qcow2Image qcow2) qcow2.MakeEmpty();
            }
            catch (IOException e) { throw new CliException($"Could not empty {file}: {Errors.Describe(e)}"); }
        }
        if (!quiet) ctx.Out.WriteLine("Image committed.");
        return 0;
    }

    /// <summary>
    /// Copies every range some layer above the base allocates, as the top of the chain reads it: data as data,
    /// zeros (zero clusters) as zeros, so that the base then reads what the top read.
    /// </summary>
    private static void CopyAllocated(DiskImage top, List<DiskImage> above, DiskImage target, Progress bar)
    {
        int piece = Math.Max(top.ClusterSize, 64 * 1024);
        var buffer = new byte[piece];
        long offset = 0;
        while (offset < top.Size)
        {
            long length = Math.Min(piece - offset % piece, top.Size - offset);
            bool allocated = false;
            foreach (var layer in above)
            {
                if (offset >= layer.Size) continue;
                long covered = offset;
                while (covered < offset + length && !allocated)
                {
                    var s = layer.GetLayerStatus(covered, Math.Min(offset + length, layer.Size) - covered);
                    allocated = s.Allocation != LayerAllocation.Unallocated;
                    covered += s.Length;
                    if (covered >= layer.Size) break;
                }
                if (allocated) break;
            }
            if (allocated)
            {
                var span = buffer.AsMemory(0, (int)length);
                top.Read(offset, span);
                if (span.Span.IndexOfAnyExcept((byte)0) < 0) target.WriteZeroes(offset, length);
                else target.Write(offset, span);
            }
            bar.Add(length);
            offset += length;
        }
    }
}
