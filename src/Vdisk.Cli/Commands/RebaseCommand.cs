using Vdisk.BlockIO;
using Vdisk.Cli.Ops;
using Vdisk.Cli.Output;
using Vdisk.Cli.Parsing;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;

namespace Vdisk.Cli.Commands;

/// <summary>vdisk rebase [-f fmt] [-t cache] [-T src_cache] [-p] [-q] [-u] -b backing [-F backing_fmt] file</summary>
internal static class RebaseCommand
{
    private static readonly LongOption[] Longs =
    {
        new("help", false, "h"), new("force-share", false, "U"),
    };

    public static int Run(CliContext ctx, IReadOnlyList<string> args)
    {
        var parsed = GetOpt.Parse(args, "hf:F:b:upt:T:qU", Longs);
        string? format = null, backing = null, backingFormat = null;
        bool unsafeMode = false, progress = false, quiet = false, forceShare = false;
        var cache = CacheMode.Writeback;
        var srcCache = CacheMode.Writeback;
        foreach (var (key, value) in parsed.Options)
        {
            switch (key)
            {
                case "h": Help.PrintUsage(ctx.Out); return 0;
                case "f": format = value; break;
                case "F": backingFormat = value; break;
                case "b": backing = value; break;
                case "u": unsafeMode = true; break;
                case "p": progress = true; break;
                case "q": quiet = true; break;
                case "U": forceShare = true; break; // the backing files only, as in qemu-img: the image itself is written
                case "t": cache = ImageOpening.ParseCache(value!); break;
                case "T": srcCache = ImageOpening.ParseCache(value!, "source cache"); break;
            }
        }
        if (quiet) progress = false;
        if (parsed.Positionals.Count != 1)
            throw new CliException("Expecting one image file name", showTryHelp: true);
        if (!unsafeMode && backing is null)
            throw new CliException("Must specify backing file (-b) or use unsafe mode (-u)", showTryHelp: true);
        backing ??= "";
        string file = parsed.Positionals[0];

        using var image = ImageOpening.Open(file, format, cache, readOnly: false, noBacking: unsafeMode);
        if (!unsafeMode)
        {
            using var newBacking = backing.Length == 0 ? null : OpenNewBacking(file, backing, backingFormat, srcCache, forceShare);
            var bar = new Progress(ctx.Out, progress, 2.0);
            bar.Start(image.Size);
            try { CopyDifferences(image, newBacking, bar); }
            catch (IOException e) { throw new CliException($"Error while rebasing: {Errors.Describe(e)}"); }
            bar.End();
        }
        ChangeBackingFile(image, backing, backingFormat);
        return 0;
    }

    private static DiskImage OpenNewBacking(string file, string backing, string? backingFormat, CacheMode cache, bool forceShare)
    {
        string resolved = DiskImages.ResolveBackingPath(file, backing);
        try
        {
            return DiskImages.Open(resolved, new ImageOpenOptions { ReadOnly = true, Format = backingFormat, Cache = cache, ForceShare = forceShare });
        }
        catch (Exception e) when (e is IOException or NotImplementedException)
        {
            throw new CliException($"Could not open new backing file '{resolved}': {Errors.Describe(e)}");
        }
    }

    /// <summary>
    /// Writes into the image every cluster it leaves to its backing chain where the old chain and the new backing
    /// file read differently, so that the guest sees the same bytes after the switch.
    /// </summary>
    private static void CopyDifferences(DiskImage image, DiskImage? newBacking, Progress bar)
    {
        int piece = Math.Max(image.ClusterSize, 64 * 1024);
        var current = new byte[piece];
        var wanted = new byte[piece];
        long offset = 0;
        while (offset < image.Size)
        {
            var status = image.GetLayerStatus(offset, Math.Min(image.Size - offset, 1L << 30));
            long end = offset + status.Length;
            if (status.Allocation == LayerAllocation.Unallocated)
            {
                for (long pos = offset; pos < end;)
                {
                    // Pieces end on piece boundaries, so that a cluster is compared (and written) as a whole.
                    int length = (int)Math.Min(end - pos, piece - pos % piece);
                    image.Read(pos, current.AsMemory(0, length));
                    ReadOrZeros(newBacking, pos, wanted.AsSpan(0, length));
                    if (!current.AsSpan(0, length).SequenceEqual(wanted.AsSpan(0, length)))
                        image.Write(pos, current.AsMemory(0, length));
                    bar.Add(length);
                    pos += length;
                }
            }
            else bar.Add(status.Length);
            offset = end;
        }
        image.Flush();
    }

    private static void ReadOrZeros(DiskImage? image, long offset, Span<byte> buffer)
    {
        buffer.Clear();
        if (image is null || offset >= image.Size) return;
        image.Read(offset, buffer[..(int)Math.Min(buffer.Length, image.Size - offset)]);
    }

    private static void ChangeBackingFile(DiskImage image, string backing, string? backingFormat)
    {
        string problem(string text) => $"Could not change the backing file to '{backing}': {text}";
        if (image is not Qcow2Image qcow2) throw new CliException(problem("Operation not supported"));
        if (backing.Length > 0 && backingFormat is null) throw new CliException(problem("backing format must be specified"));
        try
        {
            qcow2.UpdateHeader(h =>
            {
                h.BackingFile = backing.Length == 0 ? null : backing;
                h.BackingFormat = backing.Length == 0 ? null : backingFormat;
            });
        }
        catch (IOException e) { throw new CliException(problem(Errors.Describe(e))); }
    }
}
