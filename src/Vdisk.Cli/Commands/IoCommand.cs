using Vdisk.BlockIO;
using Vdisk.Cli.Parsing;
using Vdisk.Images;

namespace Vdisk.Cli.Commands;

/// <summary>
/// vdisk io [-f fmt] [-r] [-n] [-t cache] [-U] -c CMD [-c CMD ...] file: qemu-io's non-interactive mode.
/// Every command runs even after one fails; the exit status is 1 if any failed.
/// </summary>
internal static class IoCommand
{
    private static readonly LongOption[] Longs =
    {
        new("help", false, "h"), new("version", false, "V"), new("cmd", true, "c"), new("format", true, "f"),
        new("read-only", false, "r"), new("snapshot", false, "s"), new("nocache", false, "n"),
        new("copy-on-read", false, "C"), new("misalign", false, "m"), new("native-aio", false, "k"),
        new("aio", true, "i"), new("cache", true, "t"), new("discard", true, "d"), new("trace", true, "T"),
        new("force-share", false, "U"), new("load-snapshot", true, "l"), new("image-opts", false, "image-opts"), new("object", true, "object"),
    };

    public static int Run(CliContext ctx, IReadOnlyList<string> args)
    {
        ParsedArgs parsed;
        try { parsed = GetOpt.Parse(args, "hVc:d:f:rsnCmki:t:T:Ul:", Longs, GetOptStyle.Glibc); }
        catch (GetOptException e)
        {
            ctx.Error(e.Message);
            PrintUsage(ctx.Out);
            return 1;
        }
        var commands = new List<string>();
        string? format = null, snapshot = null;
        bool readOnly = false, forceShare = false;
        var cache = CacheMode.Writethrough; // qemu-io's default, unlike qemu-img's writeback
        foreach (var (key, value) in parsed.Options)
        {
            switch (key)
            {
                case "h": PrintUsage(ctx.Out); return 0;
                case "V": Help.PrintVersion(ctx.Out); return 0;
                case "c": commands.Add(value!); break;
                case "f": format = value; break;
                case "r": readOnly = true; break;
                case "U": forceShare = true; break;
                case "l": snapshot = value; readOnly = true; break;
                case "n": cache = CacheMode.None; break;
                case "t":
                    if (!CacheModes.TryParse(value!, out cache)) throw new CliException($"Invalid cache option: {value}");
                    break;
                case "s" or "C" or "T" or "image-opts" or "object":
                    throw new CliException($"io: option '{(key.Length == 1 ? "-" : "--") + key}' is not supported");
            }
        }
        if (parsed.Positionals.Count > 1)
        {
            PrintUsage(ctx.Out);
            return 1;
        }
        // Without -c, each line of standard input runs as it arrives, with the image open, as in qemu-io.
        IEnumerable<string> lines = commands.Count > 0 ? commands : ReadStdinCommands();

        DiskImage? image = null;
        if (parsed.Positionals.Count == 1)
        {
            string file = parsed.Positionals[0];
            var options = new ImageOpenOptions
            {
                ReadOnly = readOnly, Cache = cache, Format = format, Messages = ctx.Err.WriteLine, Snapshot = snapshot, ForceShare = forceShare,
            };
            try { image = DiskImages.Open(file, options); }
            catch (Exception e) when (e is IOException or NotImplementedException)
            {
                throw new CliException($"can't open device {file}: {Errors.Describe(e)}");
            }
            if (format is null && image.FormatName == "raw" && !readOnly) PrintRawProbeWarning(ctx, file);
        }

        bool failed = false;
        var session = new IoSession(ctx, image);
        try
        {
            foreach (var line in lines)
            {
                var words = SplitCommand(line);
                if (words.Count == 0) continue;
                if (words[0] is "quit" or "q") break;
                if (!session.Execute(words)) failed = true;
                if (session.Aborted) return 134; // only reached when the abort hook returns (tests)
            }
        }
        finally
        {
            if (!session.Aborted) image?.Dispose();
        }
        return failed ? 1 : 0;
    }

    private static IEnumerable<string> ReadStdinCommands()
    {
        if (!Console.IsInputRedirected) yield break;
        using var reader = new StreamReader(Output.StdioStream.Input, new System.Text.UTF8Encoding(false));
        while (reader.ReadLine() is { } line) yield return line;
    }

    private static void PrintRawProbeWarning(CliContext ctx, string file)
    {
        ctx.Err.WriteLine($"WARNING: Image format was not specified for '{file}' and probing guessed raw.");
        ctx.Err.WriteLine("         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.");
        ctx.Err.WriteLine("         Specify the 'raw' format explicitly to remove the restrictions.");
    }

    /// <summary>Splits a command on blanks; double quotes group words, as qemu-io's line breaker allows.</summary>
    internal static List<string> SplitCommand(string line)
    {
        var words = new List<string>();
        var current = new System.Text.StringBuilder();
        bool inQuotes = false, any = false;
        foreach (char c in line)
        {
            if (c == '"') { inQuotes = !inQuotes; any = true; continue; }
            if (!inQuotes && (c == ' ' || c == '\t'))
            {
                if (any) words.Add(current.ToString());
                current.Clear();
                any = false;
                continue;
            }
            current.Append(c);
            any = true;
        }
        if (any) words.Add(current.ToString());
        return words;
    }

    internal static void PrintUsage(TextWriter w) => w.Write("""
        Usage: vdisk io [OPTIONS]... [-c STRING]... [file]
        Disk exerciser (qemu-io's commands and output)

          -c, --cmd STRING     execute command with its arguments
                               from the given string
          -f, --format FMT     specifies the block driver to use
          -r, --read-only      export read-only
          -l, --load-snapshot NAME  open internal snapshot NAME (ID or tag), read-only
          -n, --nocache        disable host cache, short for -t none
          -t, --cache=MODE     use the given cache mode for the image
          -U, --force-share    force shared permissions
          -h, --help           display this help and exit
          -V, --version        output version information and exit

        See 'vdisk io -c help' for information on available commands.

        """.Replace("\r", ""));
}
