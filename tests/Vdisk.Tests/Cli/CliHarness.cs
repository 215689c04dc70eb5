using Vdisk.Cli;

namespace Vdisk.Tests.Cli;

/// <summary>Runs the CLI in-process in a scratch folder and captures what it prints.</summary>
public sealed class CliHarness : IDisposable
{
    public CliHarness()
    {
        Dir = Directory.CreateTempSubdirectory("vdisk-cli-").FullName;
    }

    public string Dir { get; }

    public string PathOf(string name) => Path.Combine(Dir, name);

    public (int Exit, string Out, string Err) Run(params string[] args)
    {
        var stdout = new StringWriter { NewLine = "\n" };
        var stderr = new StringWriter { NewLine = "\n" };
        // Relative names in the tests mean files in the scratch folder.
        var resolved = args.Select(a => a.StartsWith("@", StringComparison.Ordinal) ? PathOf(a[1..]) : a).ToArray();
        int exit = CommandLine.Run(resolved, stdout, stderr);
        return (exit, stdout.ToString(), stderr.ToString());
    }

    public void Dispose()
    {
        try { Directory.Delete(Dir, recursive: true); }
        catch (IOException) { }
    }
}
