using Vdisk.BlockIO;
using Vdisk.Cli.Ops;
using Vdisk.Cli.Output;
using Vdisk.Cli.Parsing;
using Vdisk.Images;

namespace Vdisk.Cli.Commands;

/// <summary>
/// vdisk dd [-f fmt] [-O fmt] [bs=N] [count=N] [skip=N] if=IN of=OUT: copies count blocks of bs bytes, starting
/// skip blocks into the input (the skipped blocks count towards count, as in qemu-img), to a new output image of
/// that size; every block is written.
/// </summary>
internal static class DdCommand
{
    private static readonly LongOption[] Longs = { new("help", false, "h"), new("force-share", false, "U") };

    public static int Run(CliContext ctx, IReadOnlyList<string> args)
    {
        var parsed = GetOpt.Parse(args, "hf:O:U", Longs);
        string? format = null;
        string outFormat = "raw";
        bool forceShare = false;
        foreach (var (key, value) in parsed.Options)
        {
            switch (key)
            {
                case "h": Help.PrintUsage(ctx.Out); return 0;
                case "f": format = value; break;
                case "O": outFormat = value!; break;
                case "U": forceShare = true; break;
            }
        }
        long bs = 512, count = -1, skip = 0;
        string? input = null, output = null;
        foreach (var operand in parsed.Positionals)
        {
            int eq = operand.IndexOf('=');
            if (eq <= 0) throw new CliException($"unrecognized operand {operand}", showTryHelp: true);
            string key = operand[..eq], value = operand[(eq + 1)..];
            switch (key)
            {
                case "bs":
                    bs = Number(value);
                    if (bs == 0 || bs > int.MaxValue) throw new CliException($"invalid number: '{value}'");
                    break;
                case "count": count = Number(value); break;
                case "skip": skip = Number(value); break;
                case "if": input = value; break;
                case "of": output = value; break;
                default: throw new CliException($"unrecognized operand {operand}", showTryHelp: true);
            }
        }
        if (input is null) throw new CliException("Must specify both input and output files");
        if (output is null) throw new CliException("Must specify both input and output files");
        var driver = ImageFormatRegistry.Default.Find(outFormat) ?? throw new CliException($"Unknown file format '{outFormat}'");

        using var source = ImageOpening.Open(input, format, CacheMode.Writeback, readOnly: true, forceShare: forceShare);
        long start = skip > long.MaxValue / bs ? long.MaxValue : skip * bs;
        // As qemu-img 7.2: count limits the input before the skip is taken off, so skipped blocks count too.
        long inputEnd = source.Size;
        if (count >= 0 && count <= long.MaxValue / bs) inputEnd = Math.Min(inputEnd, count * bs);
        long size = inputEnd >= start ? inputEnd - start : 0;
        if (inputEnd < start) ctx.Error($"{input}: cannot skip to specified offset");
        try { DiskImages.Create(output, driver.Name, new ImageCreateOptions { Size = size }); }
        catch (Exception e) when (e is IOException or ArgumentException)
        {
            throw new CliException($"{output}: error while creating output image: {Errors.Describe(e)}");
        }
        using var target = ImageOpening.Open(output, driver.Name, CacheMode.Writeback, readOnly: false);
        var buffer = new byte[(int)Math.Min(bs, Math.Max(size, 1))];
        using var interrupt = new Interruption();
        for (long done = 0; done < size; done += buffer.Length)
        {
            interrupt.Token.ThrowIfCancellationRequested();
            int n = (int)Math.Min(buffer.Length, size - done);
            try { source.Read(start + done, buffer.AsMemory(0, n)); }
            catch (IOException e) { throw new CliException($"error while reading from input image file: {Errors.StrError(e)}"); }
            try { target.Write(done, buffer.AsMemory(0, n)); }
            catch (IOException e) { throw new CliException($"error while writing to output image file: {Errors.StrError(e)}"); }
        }
        return 0;
    }

    private static long Number(string text) =>
        Sizes.TryParse(text, out long v) == SizeParse.Ok ? v : throw new CliException($"invalid number: '{text}'");
}
