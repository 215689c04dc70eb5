namespace Vdisk.Cli.Parsing;

/// <summary>A long option; <see cref="Key"/> is what the parsed option reports (often the matching short letter).</summary>
internal sealed record LongOption(string Name, bool HasArgument, string Key);

/// <summary>One parsed option: its key (short letter or long name) and its argument, if it takes one.</summary>
internal readonly record struct ParsedOption(string Key, string? Value);

internal sealed record ParsedArgs(IReadOnlyList<ParsedOption> Options, IReadOnlyList<string> Positionals);

/// <summary>
/// Which error wording to use: qemu-img prints its own ("unrecognized option '-x'"), qemu-io and its commands
/// print glibc's ("invalid option -- 'x'").
/// </summary>
internal enum GetOptStyle { QemuImg, Glibc }

/// <summary>A command line that getopt rejects; the message is what the tool prints.</summary>
internal sealed class GetOptException(string message) : Exception(message);

/// <summary>
/// GNU getopt_long semantics: short options clustered or with attached/separate values, long options with
/// "=value" or a separate value, unique prefixes of long names, permutation of options after operands unless
/// <c>stopAtOperand</c>, and "--" ending the options.
/// </summary>
internal static class GetOpt
{
    public static ParsedArgs Parse(IReadOnlyList<string> args, string shortSpec, IReadOnlyList<LongOption>? longs = null,
        GetOptStyle style = GetOptStyle.QemuImg, bool stopAtOperand = false)
    {
        longs ??= Array.Empty<LongOption>();
        var options = new List<ParsedOption>();
        var operands = new List<string>();
        for (int i = 0; i < args.Count; i++)
        {
            string arg = args[i];
            if (arg == "--")
            {
                operands.AddRange(args.Skip(i + 1));
                break;
            }
            if (arg.Length < 2 || arg[0] != '-')
            {
                if (stopAtOperand)
                {
                    operands.AddRange(args.Skip(i));
                    break;
                }
                operands.Add(arg);
                continue;
            }
            if (arg.StartsWith("--", StringComparison.Ordinal))
                i = ParseLong(args, i, longs, style, options);
            else
                i = ParseShort(args, i, shortSpec, style, options);
        }
        return new ParsedArgs(options, operands);
    }

    private static int ParseLong(IReadOnlyList<string> args, int i, IReadOnlyList<LongOption> longs, GetOptStyle style, List<ParsedOption> options)
    {
        string arg = args[i];
        string body = arg[2..];
        int eq = body.IndexOf('=');
        string name = eq < 0 ? body : body[..eq];
        string? attached = eq < 0 ? null : body[(eq + 1)..];
        var match = longs.FirstOrDefault(l => l.Name == name);
        if (match is null)
        {
            var candidates = longs.Where(l => l.Name.StartsWith(name, StringComparison.Ordinal)).ToList();
            if (candidates.Count == 1 || (candidates.Count > 1 && candidates.All(c => c.Key == candidates[0].Key && c.HasArgument == candidates[0].HasArgument)))
                match = candidates[0];
            else if (candidates.Count > 1)
                throw new GetOptException(style == GetOptStyle.QemuImg
                    ? $"unrecognized option '{arg}'"
                    : $"option '--{name}' is ambiguous; possibilities:" + string.Concat(candidates.Select(c => " '--" + c.Name + "'")));
        }
        if (match is null)
            throw new GetOptException($"unrecognized option '{arg}'");
        if (!match.HasArgument)
        {
            if (attached is not null)
                throw new GetOptException(style == GetOptStyle.QemuImg
                    ? $"unrecognized option '{arg}'"
                    : $"option '--{match.Name}' doesn't allow an argument");
            options.Add(new ParsedOption(match.Key, null));
            return i;
        }
        if (attached is null)
        {
            if (i + 1 >= args.Count)
                throw new GetOptException(style == GetOptStyle.QemuImg
                    ? $"missing argument for option '{arg}'"
                    : $"option '--{match.Name}' requires an argument");
            attached = args[++i];
        }
        options.Add(new ParsedOption(match.Key, attached));
        return i;
    }

    private static int ParseShort(IReadOnlyList<string> args, int i, string shortSpec, GetOptStyle style, List<ParsedOption> options)
    {
        string arg = args[i];
        for (int j = 1; j < arg.Length; j++)
        {
            char c = arg[j];
            int at = c == ':' ? -1 : shortSpec.IndexOf(c);
            if (at < 0)
                throw new GetOptException(style == GetOptStyle.QemuImg ? $"unrecognized option '{arg}'" : $"invalid option -- '{c}'");
            bool takesArgument = at + 1 < shortSpec.Length && shortSpec[at + 1] == ':';
            if (!takesArgument)
            {
                options.Add(new ParsedOption(c.ToString(), null));
                continue;
            }
            string value;
            if (j + 1 < arg.Length) value = arg[(j + 1)..];
            else if (i + 1 < args.Count) value = args[++i];
            else
                throw new GetOptException(style == GetOptStyle.QemuImg
                    ? $"missing argument for option '{arg}'"
                    : $"option requires an argument -- '{c}'");
            options.Add(new ParsedOption(c.ToString(), value));
            break;
        }
        return i;
    }
}
