using Vdisk.BlockIO;
using Vdisk.Cli.Ops;
using Vdisk.Cli.Output;
using Vdisk.Cli.Parsing;
using Vdisk.Images;

namespace Vdisk.Cli.Commands;

/// <summary>
/// vdisk compare [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] file1 file2: exit 0 when the guest contents
/// are equal (unallocated reads as zeros, a longer image must hold only zeros past the shorter one), 1 when they
/// differ, 2 when an image cannot be opened, 3 when block status fails, 4 when a read fails. With -s, sizes and
/// block status (allocation, zero and data flags) must match too.
/// </summary>
internal static class CompareCommand
{
    private const int BufferSize = 2 << 20;
    private static readonly LongOption[] Longs = { new("help", false, "h"), new("force-share", false, "U") };

    public static int Run(CliContext ctx, IReadOnlyList<string> args)
    {
        var parsed = GetOpt.Parse(args, "hf:F:T:pqsU", Longs);
        string? format1 = null, format2 = null;
        bool progress = false, quiet = false, strict = false, forceShare = false;
        var cache = CacheMode.Writeback;
        foreach (var (key, value) in parsed.Options)
        {
            switch (key)
            {
                case "h": Help.PrintUsage(ctx.Out); return 0;
                case "f": format1 = value; break;
                case "F": format2 = value; break;
                case "T": cache = ImageOpening.ParseCache(value!, "source cache"); break;
                case "p": progress = true; break;
                case "q": quiet = true; break;
                case "s": strict = true; break;
                case "U": forceShare = true; break;
            }
        }
        if (quiet) progress = false;
        if (parsed.Positionals.Count != 2) throw new CliException("Expecting two image file names", showTryHelp: true);
        string file1 = parsed.Positionals[0], file2 = parsed.Positionals[1];

        DiskImage a, b;
        try { a = ImageOpening.Open(file1, format1, cache, readOnly: true, forceShare: forceShare); }
        catch (CliException e) { ctx.Error(e.Message); return 2; }
        using (a)
        {
            try { b = ImageOpening.Open(file2, format2, cache, readOnly: true, forceShare: forceShare); }
            catch (CliException e) { ctx.Error(e.Message); return 2; }
            using (b)
            {
                var bar = new Progress(ctx.Out, progress, minStep: 2.0);
                bar.Start(Math.Max(a.Size, b.Size));
                int result = new Comparison(ctx, a, b, file1, file2, strict, quiet, bar).Run();
                bar.End();
                return result;
            }
        }
    }

    private sealed class Comparison(CliContext ctx, DiskImage a, DiskImage b, string file1, string file2, bool strict, bool quiet, Progress bar)
    {
        private readonly byte[] _buf1 = new byte[BufferSize], _buf2 = new byte[BufferSize];

        private void Say(string text)
        {
            if (!quiet) ctx.Out.WriteLine(text);
        }

        public int Run()
        {
            if (strict && a.Size != b.Size)
            {
                Say("Strict mode: Image size mismatch!");
                return 1;
            }
            long common = Math.Min(a.Size, b.Size);
            for (long offset = 0; offset < common;)
            {
                BlockStatus s1, s2;
                try
                {
                    s1 = a.GetBlockStatus(offset, common - offset);
                    s2 = b.GetBlockStatus(offset, common - offset);
                }
                catch (IOException e)
                {
                    ctx.Error($"Sector allocation test failed: {Errors.Describe(e)}");
                    return 3;
                }
                long chunk = Math.Min(s1.Length, s2.Length);
                if (strict && !SameStatus(s1, s2))
                {
                    Say($"Strict mode: Offset {offset} block status mismatch!");
                    return 1;
                }
                if (!(s1.Zero && s2.Zero))
                {
                    chunk = Math.Min(chunk, BufferSize);
                    int r = s1.Present == s2.Present
                        ? (s1.Present ? CompareContent(offset, (int)chunk) : 0)
                        : CheckEmpty(s1.Present ? a : b, s1.Present ? file1 : file2, offset, (int)chunk);
                    if (r != 0) return r;
                }
                offset += chunk;
                bar.Add(chunk);
            }
            if (a.Size != b.Size)
            {
                Say("Warning: Image size mismatch!");
                var (over, name) = a.Size > b.Size ? (a, file1) : (b, file2);
                for (long offset = common; offset < over.Size;)
                {
                    var s = over.GetBlockStatus(offset, over.Size - offset);
                    long chunk = s.Length;
                    if (s.Present && !s.Zero)
                    {
                        chunk = Math.Min(chunk, BufferSize);
                        int r = CheckEmpty(over, name, offset, (int)chunk);
                        if (r != 0) return r;
                    }
                    offset += chunk;
                    bar.Add(chunk);
                }
            }
            Say("Images are identical.");
            return 0;
        }

        /// <summary>Strict mode compares what qemu's block status reports: allocation, zero, data, and whether there is a host offset.</summary>
        private static bool SameStatus(BlockStatus x, BlockStatus y) =>
            x.Present == y.Present && x.Zero == y.Zero && x.Data == y.Data && x.HasHostOffset == y.HasHostOffset;

        private int CompareContent(long offset, int length)
        {
            // The two images are independent: read them at the same time.
            var first = Task.Run(() => TryRead(a, file1, offset, _buf1.AsMemory(0, length)));
            bool second = TryRead(b, file2, offset, _buf2.AsMemory(0, length));
            if (!first.GetAwaiter().GetResult() || !second) return 4;
            int same = _buf1.AsSpan(0, length).CommonPrefixLength(_buf2.AsSpan(0, length));
            if (same == length) return 0;
            // qemu-img compares in 512-byte sectors and names the first sector that differs.
            Say($"Content mismatch at offset {offset + (same & ~511)}!");
            return 1;
        }

        private int CheckEmpty(DiskImage image, string name, long offset, int length)
        {
            if (!TryRead(image, name, offset, _buf1.AsMemory(0, length))) return 4;
            int first = _buf1.AsSpan(0, length).IndexOfAnyExcept((byte)0);
            if (first < 0) return 0;
            Say($"Content mismatch at offset {offset + (first & ~511)}!");
            return 1;
        }

        private bool TryRead(DiskImage image, string name, long offset, Memory<byte> buffer)
        {
            try
            {
                image.Read(offset, buffer);
                return true;
            }
            catch (IOException e)
            {
                ctx.Error($"Error while reading offset {offset} of {name}: {Errors.StrError(e)}");
                return false;
            }
        }
    }
}
