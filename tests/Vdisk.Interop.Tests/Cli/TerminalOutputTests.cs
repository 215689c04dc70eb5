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
        var expected = new Dictionary<string, string>
        {
            [$"info '{image}'"] = "file format: qcow2", [$"io -c 'read 0 512' '{image}'"] = "read 512/512 bytes", [$"map '{image}'"] = "Offset",
        };
        foreach (var (command, output) in expected)
        {
            var r = Tools.Run("script", "-qec", $"{cli} {command}", "/dev/null");
            Assert.True(r.ExitCode == 0, r.ToString());
            Assert.Contains(output, r.StdOut);
            Assert.DoesNotContain('\u001b', r.StdOut);
        }
    }
}
