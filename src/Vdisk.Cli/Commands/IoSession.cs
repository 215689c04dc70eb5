using System.Diagnostics;
using System.Globalization;
using Vdisk.Cli.Output;
using Vdisk.Cli.Parsing;
using Vdisk.Images;

namespace Vdisk.Cli.Commands;

/// <summary>qemu-io's commands (read, write, discard, alloc, flush, length, abort, help) on one open image.</summary>
internal sealed class IoSession(CliContext ctx, DiskImage? image)
{
    /// <summary>qemu's largest single request (BDRV_REQUEST_MAX_BYTES).</summary>
    internal const long MaxRequest = 2147483136;

    private sealed record Command(string Name, string? Alias, int ArgMin, int ArgMax, string? Args, string OneLine, bool NeedsFile, bool Writes);

    private static readonly Command[] Commands =
    {
        new("abort", null, 0, 0, null, "simulate a program crash using abort(3)", true, false),
        new("alloc", "a", 1, 2, "offset [count]", "checks if offset is allocated in the file", true, false),
        new("discard", "d", 2, -1, "[-Cq] off len", "discards a number of bytes at a specified offset", true, true),
        new("flush", "f", 0, 0, null, "flush all in-core file state to disk", true, false),
        new("help", "?", 0, 1, "[command]", "help for one or all commands", false, false),
        new("length", "l", 0, 0, null, "gets the length of the current file", true, false),
        new("quit", "q", 0, 0, null, "exit the program", false, false),
        new("read", "r", 2, -1, "[-abCqv] [-P pattern [-s off] [-l len]] off len", "reads a number of bytes at a specified offset", true, false),
        new("write", "w", 2, -1, "[-bcCfnquz] [-P pattern | -s source_file] off len", "writes a number of bytes at a specified offset", true, true),
    };

    public bool Aborted { get; private set; }

    private TextWriter Out => ctx.Out;

    /// <summary>Runs one command; false when it failed (qemu-io then exits with status 1).</summary>
    public bool Execute(IReadOnlyList<string> words)
    {
        var cmd = Commands.FirstOrDefault(c => c.Name == words[0] || c.Alias == words[0]);
        if (cmd is null)
        {
            ctx.Err.WriteLine($"command \"{words[0]}\" not found");
            return false;
        }
        if (cmd.NeedsFile && image is null)
        {
            ctx.Err.WriteLine("no file open, try 'help open'");
            return false;
        }
        if (cmd.Writes && image!.IsReadOnly)
        {
            ctx.Error("Block node is read-only");
            return false;
        }
        int argc = words.Count - 1;
        if (argc < cmd.ArgMin || (cmd.ArgMax >= 0 && argc > cmd.ArgMax))
        {
            ctx.Err.WriteLine(cmd.ArgMax < 0 ? $"bad argument count {argc} to {cmd.Name}, expected at least {cmd.ArgMin} arguments"
                : cmd.ArgMin == cmd.ArgMax ? $"bad argument count {argc} to {cmd.Name}, expected {cmd.ArgMin} arguments"
                : $"bad argument count {argc} to {cmd.Name}, expected between {cmd.ArgMin} and {cmd.ArgMax} arguments");
            return false;
        }
        try
        {
            return cmd.Name switch
            {
                "read" => Read(cmd, words),
                "write" => Write(cmd, words),
                "discard" => Discard(cmd, words),
                "alloc" => Alloc(words),
                "flush" => Flush(),
                "length" => Length(),
                "help" => HelpCommand(words),
                "abort" => Abort(),
                _ => true,
            };
        }
        catch (GetOptException e)
        {
            ctx.Err.WriteLine($"{cmd.Name}: {e.Message}");
            Usage(cmd);
            return false;
        }
    }

    private bool Read(Command cmd, IReadOnlyList<string> words)
    {
        var parsed = GetOpt.Parse(words.Skip(1).ToList(), "bCl:pP:qs:v", null, GetOptStyle.Glibc);
        bool quiet = false, verbose = false;
        int? pattern = null;
        long patternOffset = 0, patternCount = -1;
        foreach (var (key, value) in parsed.Options)
        {
            switch (key)
            {
                case "P":
                    if (!TryPattern(value!, out int p)) return false;
                    pattern = p;
                    break;
                case "s": if (!TryNumber(value!, out patternOffset)) return false; break;
                case "l": if (!TryNumber(value!, out patternCount)) return false; break;
                case "q": quiet = true; break;
                case "v": verbose = true; break;
                case "b" or "C": return Unsupported(cmd, key);
            }
        }
        if (parsed.Positionals.Count != 2 || (pattern is null && (patternCount >= 0 || patternOffset != 0)))
            return Usage(cmd);
        if (!TryOffsetAndLength(parsed.Positionals, out long offset, out long count)) return false;
        if (patternCount < 0) patternCount = count - patternOffset;
        if (patternCount < 0 || patternCount + patternOffset > count)
        {
            Out.WriteLine("pattern verification range exceeds end of read data");
            return false;
        }

        var buffer = new byte[count];
        var clock = Stopwatch.StartNew();
        try { image!.Read(offset, buffer.AsMemory()); }
        catch (IOException e)
        {
            return Failed("read", e);
        }
        var elapsed = clock.Elapsed;

        bool ok = true;
        if (pattern is { } expected &&
            buffer.AsSpan((int)patternOffset, (int)patternCount).IndexOfAnyExcept((byte)expected) >= 0)
        {
            Out.WriteLine($"Pattern verification failed at offset {offset + patternOffset}, {patternCount} bytes");
            ok = false;
        }
        if (quiet) return ok;
        if (verbose) DumpBuffer(buffer, offset);
        Report("read", elapsed, offset, count);
        return ok;
    }

    private bool Write(Command cmd, IReadOnlyList<string> words)
    {
        var parsed = GetOpt.Parse(words.Skip(1).ToList(), "bcCfnpP:quzs:", null, GetOptStyle.Glibc);
        bool quiet = false, zero = false, unmap = false, fua = false, patternGiven = false, sourceGiven = false;
        int pattern = 0xcd;
        foreach (var (key, value) in parsed.Options)
        {
            switch (key)
            {
                case "P":
                    if (!TryPattern(value!, out pattern)) return false;
                    patternGiven = true;
                    break;
                case "q": quiet = true; break;
                case "z": zero = true; break;
                case "u": unmap = true; break;
                case "f": fua = true; break;
                case "s": sourceGiven = true; break;
                case "b" or "c" or "C": return Unsupported(cmd, key);
            }
        }
        if (parsed.Positionals.Count != 2) return Usage(cmd);
        if (unmap && !zero)
        {
            Out.WriteLine("-u requires -z to be specified");
            return false;
        }
        if ((zero ? 1 : 0) + (patternGiven ? 1 : 0) + (sourceGiven ? 1 : 0) > 1)
        {
            Out.WriteLine("Only one of -z, -P, and -s can be specified at the same time");
            return false;
        }
        if (sourceGiven) return Unsupported(cmd, "s");
        if (!TryOffsetAndLength(parsed.Positionals, out long offset, out long count)) return false;

        var clock = Stopwatch.StartNew();
        try
        {
            if (zero) image!.WriteZeroes(offset, count, unmap);
            else
            {
                var buffer = new byte[count];
                buffer.AsSpan().Fill((byte)pattern);
                image!.Write(offset, buffer.AsMemory());
            }
            // Force Unit Access: the write must be durable before it completes.
            if (fua) image.Flush();
        }
        catch (IOException e)
        {
            return Failed("write", e);
        }
        if (!quiet) Report("wrote", clock.Elapsed, offset, count);
        return true;
    }

    private bool Discard(Command cmd, IReadOnlyList<string> words)
    {
        var parsed = GetOpt.Parse(words.Skip(1).ToList(), "Cq", null, GetOptStyle.Glibc);
        bool quiet = false;
        foreach (var (key, _) in parsed.Options)
        {
            if (key == "q") quiet = true;
            else return Unsupported(cmd, key);
        }
        if (parsed.Positionals.Count != 2) return Usage(cmd);
        if (!TryOffsetAndLength(parsed.Positionals, out long offset, out long count)) return false;
        var clock = Stopwatch.StartNew();
        try { image!.Discard(offset, count); }
        catch (IOException e)
        {
            return Failed("discard", e);
        }
        if (!quiet) Report("discard", clock.Elapsed, offset, count);
        return true;
    }

    /// <summary>
    /// qemu-io's alloc: how many bytes of [offset, offset + count) this image's own layer allocates, as data or as
    /// zeros (what the backing file holds does not count). The count defaults to one sector and stops at the end
    /// of the image, as qemu-io's does. Operands are plain numbers: no options (alloc -q is an argument count error).
    /// </summary>
    private bool Alloc(IReadOnlyList<string> words)
    {
        if (!TryNumber(words[1], out long start)) return false;
        long count = 512;
        if (words.Count == 3 && !TryNumber(words[2], out count)) return false;
        long offset = start, remaining = count, allocated = 0;
        try
        {
            while (remaining > 0 && offset < image!.Size)
            {
                var s = image.GetLayerStatus(offset, Math.Min(remaining, image.Size - offset));
                if (s.Allocation != LayerAllocation.Unallocated) allocated += s.Length;
                offset += s.Length;
                remaining -= s.Length;
            }
        }
        catch (IOException e)
        {
            return Failed("is_allocated", e);
        }
        Out.WriteLine($"{allocated}/{count - remaining} bytes allocated at offset {Sizes.ToIoString(start)}");
        return true;
    }

    /// <summary>
    /// qemu-io's "write failed: No space left on device". Corruption found by the request is first told on stderr in
    /// the driver's words, as QEMU does ("qcow2: Marking image as corrupt: ..."; later refusals say why too).
    /// </summary>
    private bool Failed(string operation, IOException e)
    {
        if (e is CorruptImageException corrupt) ctx.Err.WriteLine($"{image!.FormatName}: {corrupt.Problem}");
        Out.WriteLine($"{operation} failed: {Errors.StrError(e)}");
        return false;
    }

    private bool Flush()
    {
        try { image!.Flush(); }
        catch (IOException e)
        {
            return Failed("flush", e);
        }
        return true;
    }

    private bool Length()
    {
        Out.WriteLine(Sizes.ToIoString(image!.Size));
        return true;
    }

    private bool Abort()
    {
        // A crash: nothing written back, nothing flushed, stdout's buffer lost as with abort(3).
        Aborted = true;
        image!.Abandon();
        ctx.Abort();
        return false;
    }

    private bool HelpCommand(IReadOnlyList<string> words)
    {
        if (words.Count == 2)
        {
            var cmd = Commands.FirstOrDefault(c => c.Name == words[1] || c.Alias == words[1]);
            if (cmd is null)
            {
                Out.WriteLine($"command {words[1]} not found");
                return false;
            }
            Usage(cmd);
            return true;
        }
        foreach (var cmd in Commands) Usage(cmd);
        Out.WriteLine();
        Out.WriteLine("Use 'help commandname' for extended help.");
        return true;
    }

    private bool Usage(Command cmd)
    {
        Out.WriteLine(cmd.Args is null ? $"{cmd.Name} -- {cmd.OneLine}" : $"{cmd.Name} {cmd.Args} -- {cmd.OneLine}");
        return false;
    }

    private bool Unsupported(Command cmd, string option)
    {
        Out.WriteLine($"{cmd.Name}: option -{option} is not supported by vdisk");
        return false;
    }

    /// <summary>A pattern byte in C's strtol base-0 syntax: 85, 0x55, 0125.</summary>
    private bool TryPattern(string text, out int pattern)
    {
        pattern = 0;
        bool ok;
        string t = text.Trim();
        bool negative = t.StartsWith('-');
        if (negative || t.StartsWith('+')) t = t[1..];
        if (t.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
            ok = int.TryParse(t[2..], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out pattern);
        else if (t.Length > 1 && t[0] == '0')
        {
            try { pattern = Convert.ToInt32(t, 8); ok = true; }
            catch (Exception e) when (e is FormatException or OverflowException or ArgumentException) { ok = false; }
        }
        else ok = int.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out pattern);
        if (negative) pattern = -pattern;
        if (ok && pattern is >= 0 and <= 255) return true;
        Out.WriteLine($"{text} is not a valid pattern byte");
        return false;
    }

    /// <summary>qemu-io's cvtnum: a size with optional suffix; errors printed as qemu-io prints them.</summary>
    private bool TryNumber(string text, out long value)
    {
        switch (Sizes.TryParse(text, out value))
        {
            case SizeParse.Ok: return true;
            case SizeParse.TooLarge: Out.WriteLine($"Parsing error: argument too large -- {text}"); return false;
            default: Out.WriteLine($"Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- {text}"); return false;
        }
    }

    private bool TryOffsetAndLength(IReadOnlyList<string> operands, out long offset, out long count)
    {
        count = 0;
        if (!TryNumber(operands[0], out offset) || !TryNumber(operands[1], out count)) return false;
        if (count > MaxRequest)
        {
            Out.WriteLine($"length cannot exceed {MaxRequest}, given {operands[1]}");
            return false;
        }
        return true;
    }

    private void Report(string op, TimeSpan elapsed, long offset, long count)
    {
        double seconds = elapsed.TotalSeconds;
        Out.WriteLine($"{op} {count}/{count} bytes at offset {offset}");
        Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{Sizes.ToIoString(count)}, 1 ops; {Sizes.ToIoTime(elapsed)} ({Sizes.ToIoString(count / seconds)}/sec and {Sizes.ToFixed4(1 / seconds)} ops/sec)"));
    }

    /// <summary>qemu-io -v: 16 bytes a line, hex then the printable characters (a space counts as not printable).</summary>
    private void DumpBuffer(byte[] buffer, long offset)
    {
        var line = new System.Text.StringBuilder();
        for (int i = 0; i < buffer.Length; i += 16)
        {
            line.Clear();
            line.Append((offset + i).ToString("x8", CultureInfo.InvariantCulture)).Append(":  ");
            int n = Math.Min(16, buffer.Length - i);
            for (int j = 0; j < n; j++) line.Append(buffer[i + j].ToString("x2", CultureInfo.InvariantCulture)).Append(' ');
            line.Append(' ');
            for (int j = 0; j < n; j++)
            {
                byte b = buffer[i + j];
                line.Append(b is > 0x20 and < 0x7f ? (char)b : '.');
            }
            Out.WriteLine(line.ToString());
        }
    }
}
