using System.Globalization;
using Vdisk.Cli.Output;
using Vdisk.Cli.Parsing;
using Vdisk.Images;

namespace Vdisk.Cli.Commands;

/// <summary>vdisk map [-f fmt] [--output=human|json] [--start-offset=N] [--max-length=N] file</summary>
internal static class MapCommand
{
    private static readonly LongOption[] Longs =
    {
        new("help", false, "h"), new("format", true, "f"), new("output", true, "output"),
        new("start-offset", true, "start-offset"), new("max-length", true, "max-length"), new("force-share", false, "U"),
    };

    /// <summary>One line of qemu-img map: a guest range and how the chain maps it.</summary>
    internal sealed record Entry(long Start, long Length, int Depth, bool Present, bool Zero, bool Data, long Offset, string? File)
    {
        public bool HasOffset => Offset >= 0;

        public static Entry From(BlockStatus s) => new(s.Offset, s.Length, s.Depth, s.Present, s.Zero, s.Data,
            s.HasHostOffset && !s.Compressed ? s.HostOffset : -1, s.File);

        /// <summary>qemu-img merges neighbours that agree on everything and continue each other on the host.</summary>
        public bool CanAppend(Entry next) =>
            Length > 0 && Start + Length == next.Start && Depth == next.Depth && Present == next.Present &&
            Zero == next.Zero && Data == next.Data && HasOffset == next.HasOffset &&
            (!HasOffset || Offset + Length == next.Offset) && File == next.File;

        public string ToJson() =>
            string.Create(CultureInfo.InvariantCulture,
                $"{{ \"start\": {Start}, \"length\": {Length}, \"depth\": {Depth}, \"present\": {B(Present)}, \"zero\": {B(Zero)}, \"data\": {B(Data)}")
            + (HasOffset ? string.Create(CultureInfo.InvariantCulture, $", \"offset\": {Offset}") : "") + "}";

        public string ToHuman() => $"{Hex(Start),-16}{Hex(Length),-16}{Hex(Offset),-16}{File}";

        private static string B(bool b) => b ? "true" : "false";
        private static string Hex(long v) => v == 0 ? "0" : "0x" + v.ToString("x", CultureInfo.InvariantCulture);
    }

    public static int Run(CliContext ctx, IReadOnlyList<string> args)
    {
        var parsed = GetOpt.Parse(args, "f:hU", Longs);
        string? format = null;
        bool json = false, forceShare = false;
        long start = 0, maxLength = -1;
        foreach (var (key, value) in parsed.Options)
        {
            switch (key)
            {
                case "h": Help.PrintUsage(ctx.Out); return 0;
                case "f": format = value; break;
                case "output": json = InfoCommand.ParseOutputFormat(value!); break;
                case "start-offset": start = ParseOffset(value!, "start offset"); break;
                case "max-length": maxLength = ParseOffset(value!, "max length"); break;
                case "U": forceShare = true; break;
            }
        }
        if (parsed.Positionals.Count != 1) throw new CliException("Expecting one image file name", showTryHelp: true);
        string file = parsed.Positionals[0];

        DiskImage image;
        try { image = DiskImages.Open(file, new ImageOpenOptions { ReadOnly = true, Format = format, ForceShare = forceShare }); }
        catch (Exception e) when (e is IOException or NotImplementedException) { throw new CliException(Errors.OpenFailure(file, e)); }
        using (image)
        {
            long end = maxLength < 0 ? image.Size : Math.Min(image.Size, start + Math.Min(maxLength, long.MaxValue - start));
            ctx.Out.Write(json ? "[" : "Offset          Length          Mapped to       File\n");
            var current = new Entry(start, 0, 0, false, false, false, -1, null);
            for (long offset = start; offset < end;)
            {
                // Ask in 1 GiB pieces, as qemu-img does, so one answer never has to describe the whole disk.
                var status = image.GetBlockStatus(offset, Math.Min(end - offset, 1L << 30));
                var next = Entry.From(status);
                if (current.CanAppend(next)) current = current with { Length = current.Length + next.Length };
                else
                {
                    if (current.Length > 0) Dump(ctx, current, json, last: false);
                    current = next;
                }
                offset += status.Length;
            }
            Dump(ctx, current, json, last: true);
        }
        return 0;
    }

    private static void Dump(CliContext ctx, Entry e, bool json, bool last)
    {
        if (json)
        {
            ctx.Out.Write(e.ToJson());
            ctx.Out.Write(last ? "]\n" : ",\n");
            return;
        }
        if (!e.Data) return;
        if (!e.HasOffset) throw new CliException("File contains external, encrypted or compressed clusters.");
        ctx.Out.WriteLine(e.ToHuman());
    }

    private static long ParseOffset(string text, string what) => Sizes.TryParse(text, out long v) == SizeParse.Ok
        ? v
        : throw new CliException(Errors.InvalidSize(what));
}
