using Vdisk.Cli.Commands;
using Vdisk.Cli.Parsing;

namespace Vdisk.Cli;

/// <summary>Entry point: "vdisk [standard options] command [command options]", qemu-img's shape.</summary>
public static class CommandLine
{
    private static readonly LongOption[] Longs = { new("help", false, "h"), new("version", false, "V") };

    public static int Run(string[] args) => Run(args, Console.Out, Console.Error);

    /// <summary>Runs one command line, writing to the given streams; returns the exit status.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr) => Run(args, new CliContext(stdout, stderr));

    internal static int Run(string[] args, CliContext ctx)
    {
        try
        {
            // Standard options come before the command; everything after it belongs to the command.
            var parsed = GetOpt.Parse(args, "hV", Longs, stopAtOperand: true);
            foreach (var (key, _) in parsed.Options)
            {
                if (key == "h") { Help.PrintUsage(ctx.Out); return 0; }
                if (key == "V") { Help.PrintVersion(ctx.Out); return 0; }
            }
            if (parsed.Positionals.Count == 0) throw new CliException("Not enough arguments", showTryHelp: true);
            string command = parsed.Positionals[0];
            var rest = parsed.Positionals.Skip(1).ToArray();
            return command switch
            {
                "create" => CreateCommand.Run(ctx, rest),
                "info" => InfoCommand.Run(ctx, rest),
                "map" => MapCommand.Run(ctx, rest),
                "io" => IoCommand.Run(ctx, rest),
                "bench" => BenchCommand.Run(ctx, rest),
                "check" => CheckCommand.Run(ctx, rest),
                "serve" => ServeCommand.Run(ctx, rest),
                "convert" => ConvertCommand.Run(ctx, rest),
                "compare" => CompareCommand.Run(ctx, rest),
                "measure" => MeasureCommand.Run(ctx, rest),
                "dd" => DdCommand.Run(ctx, rest),
                "snapshot" => SnapshotCommand.Run(ctx, rest),
                "resize" => ResizeCommand.Run(ctx, rest),
                "rebase" => RebaseCommand.Run(ctx, rest),
                "commit" => CommitCommand.Run(ctx, rest),
                "amend" => AmendCommand.Run(ctx, rest),
                "help" => PrintHelp(ctx),
                _ => throw new CliException($"Command not found: {command}", showTryHelp: true),
            };
        }
        catch (GetOptException e)
        {
            return Fail(ctx, e.Message, 1, true);
        }
        catch (CliException e)
        {
            return Fail(ctx, e.Message, e.ExitCode, e.ShowTryHelp);
        }
        catch (CliAbortException)
        {
            return 134;
        }
        catch (IOException e)
        {
            return Fail(ctx, e.Message, 1, false);
        }
        catch (Exception e)
        {
            // Never a stack trace: a bug still ends with one line and a failure status.
            return Fail(ctx, $"internal error: {e.GetType().Name}: {e.Message}", 1, false);
        }
    }

    private static int PrintHelp(CliContext ctx)
    {
        Help.PrintUsage(ctx.Out);
        return 0;
    }

    private static int Fail(CliContext ctx, string message, int exitCode, bool tryHelp)
    {
        // qemu's multi-line errors carry the program prefix on the first line only, unless the text adds more.
        ctx.Error(message);
        if (tryHelp) ctx.Err.WriteLine($"Try '{CliContext.Program} --help' for more information");
        return exitCode;
    }
}
