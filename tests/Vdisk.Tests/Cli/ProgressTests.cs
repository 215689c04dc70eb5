using Vdisk.Cli.Output;
using Xunit;

namespace Vdisk.Tests.Cli;

public class ProgressTests
{
    [Fact]
    public void TerminalBarShowsPercentageThroughputAndTimeLeft()
    {
        var sw = new StringWriter();
        var p = new Progress(sw, enabled: true, terminal: true);
        p.Start(100 << 20);
        p.Add(50 << 20);
        var text = sw.ToString();
        Assert.Contains("50.00%", text);
        Assert.Contains("MiB/s", text);
        Assert.Contains(" left", text);
        Assert.Contains("[####################", text);
    }

    [Fact]
    public void PipedOutputIsQemuImgsPlainLines()
    {
        var sw = new StringWriter();
        var p = new Progress(sw, enabled: true, terminal: false);
        p.Start(1000);
        p.Add(500);
        p.End();
        Assert.Equal("    (0.00/100%)\r    (50.00/100%)\r\n", sw.ToString());
    }

    [Fact]
    public void DisabledPrintsNothing()
    {
        var sw = new StringWriter();
        var p = new Progress(sw, enabled: false, terminal: true);
        p.Start(1000);
        p.Add(1000);
        p.End();
        Assert.Equal("", sw.ToString());
    }
}
