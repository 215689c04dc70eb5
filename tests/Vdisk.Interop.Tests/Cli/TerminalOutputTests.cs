using Xunit;

namespace Vdisk.Interop.Tests.Cli;

/// <summary>On a terminal, vdisk writes its output and nothing else, as qemu-img does.</summary>
public class TerminalOutputTests
{
    [Fact]
    public void NoTerminalControlSequencesBeforeTheOutput()
    {
        using var dir = new TempDir();
        var image = dir.File("t.qcow2");
        Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "qcow2", image, "1M").ExitCode);
        var cli = Environment.GetEnvironmentVariable("VDISK_CLI") is { Length: > 0 } native
            ? $"'{native}'" : $"dotnet '{Path.Combine(AppContext.BaseDirectory, "Vdisk.Cli.dll")}'";
        // script(1) runs the command on a pseudo-terminal (stdin, stdout and stderr all a tty) and copies what it writes.
        foreach (var command in new[] { $"info '{image}'", $"io -c 'read 0 512' '{image}'", $"map '{image}'" })
        {
            var r = Tools.Run("script", "-qec", $"{cli} {command}", "/dev/null");
            Assert.True(r.ExitCode == 0, r.ToString());
            Assert.Contains(command.StartsWith("io", StringComparison.Ordinal) ? "read 512/512 bytes" : "", r.StdOut);
            Assert.DoesNotContain('\u001b', r.StdOut);
        }
    }
}
