using System.Text.RegularExpressions;
using Xunit;

namespace Vdisk.Tests.Cli;

public class IoBenchTests : IDisposable
{
    private static readonly Regex Stats = new(@"^(\S+ \S+|\S+ bytes|\S+ [KMGTPE]iB), 1 ops; (\d\d\.\d\d sec|\d+:\d\d:\d\d\.\d\d) \(\S+ (bytes|[KMGTPE]iB)/sec and (\d+\.\d{4}|inf) ops/sec\)$");
    private readonly CliHarness _cli = new();

    public IoBenchTests()
    {
        _cli.Run("create", "-q", "-f", "raw", "@d.raw", "1M");
    }

    public void Dispose() => _cli.Dispose();

    private (int Exit, string[] Lines, string Err) Io(params string[] commands)
    {
        var args = new List<string> { "io", "-f", "raw" };
        foreach (var c in commands) { args.Add("-c"); args.Add(c); }
        args.Add("@d.raw");
        var (exit, stdout, stderr) = _cli.Run(args.ToArray());
        return (exit, stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries), stderr);
    }

    [Fact]
    public void WriteThenReadReportsLikeQemuIo()
    {
        var (exit, lines, err) = Io("write -P 0xab 64k 4k", "read -P 0xab 64k 4k");
        Assert.Equal(0, exit);
        Assert.Equal("", err);
        Assert.Equal("wrote 4096/4096 bytes at offset 65536", lines[0]);
        Assert.Matches(Stats, lines[1]);
        Assert.StartsWith("4 KiB, 1 ops; ", lines[1]);
        Assert.Equal("read 4096/4096 bytes at offset 65536", lines[2]);
        var data = File.ReadAllBytes(_cli.PathOf("d.raw"));
        Assert.All(data.AsSpan(65536, 4096).ToArray(), b => Assert.Equal(0xab, b));
        Assert.Equal(0, data[65536 + 4096]);
    }

    [Fact]
    public void PatternMismatchFailsButStillReports()
    {
        var (exit, lines, _) = Io("read -P 0x56 0 4k");
        Assert.Equal(1, exit);
        Assert.Equal("Pattern verification failed at offset 0, 4096 bytes", lines[0]);
        Assert.Equal("read 4096/4096 bytes at offset 0", lines[1]);
    }

    [Fact]
    public void PatternSubrangeIsChecked()
    {
        var (exit, lines, _) = Io("write -P 7 1 2", "read -q -P 7 -s 1 -l 2 0 4", "read -q -P 7 -s 0 -l 2 0 4");
        Assert.Equal(1, exit);
        Assert.Equal("Pattern verification failed at offset 0, 2 bytes", lines[2]);
    }

    [Fact]
    public void VerboseReadDumpsHexAndText()
    {
        var (_, lines, _) = Io("write -P 0x41 0 3", "write -P 0x20 3 1", "read -v 1 20");
        Assert.Equal("00000001:  41 41 20 00 00 00 00 00 00 00 00 00 00 00 00 00  AA..............", lines[4]);
        Assert.Equal("00000011:  00 00 00 00  ....", lines[5]);
    }

    [Fact]
    public void ZeroWriteAndDiscardClearData()
    {
        var (exit, lines, _) = Io("write -P 1 0 8k", "write -z 0 4k", "discard 4k 4k", "read -q -P 0 0 4k");
        Assert.Equal(0, exit);
        Assert.Equal("discard 4096/4096 bytes at offset 4096", lines[4]);
        Assert.Equal(0, File.ReadAllBytes(_cli.PathOf("d.raw"))[100]);
    }

    [Theory]
    [InlineData("read 1M 1", "read failed: Input/output error", "")]
    [InlineData("discard 1048575 2", "discard failed: Input/output error", "")]
    [InlineData("read 0 x", "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- x", "")]
    [InlineData("read 0 99E", "Parsing error: argument too large -- 99E", "")]
    [InlineData("read 0 3G", "length cannot exceed 2147483136, given 3G", "")]
    [InlineData("write -P 0x100 0 1", "0x100 is not a valid pattern byte", "")]
    [InlineData("write -z -P 1 0 1", "Only one of -z, -P, and -s can be specified at the same time", "")]
    [InlineData("write -u 0 1", "-u requires -z to be specified", "")]
    [InlineData("write 0 1 2", "write [-bcCfnquz] [-P pattern | -s source_file] off len -- writes a number of bytes at a specified offset", "")]
    [InlineData("read -x 0 1", "read [-abCqv] [-P pattern [-s off] [-l len]] off len -- reads a number of bytes at a specified offset", "read: invalid option -- 'x'\n")]
    [InlineData("read 0", null, "bad argument count 1 to read, expected at least 2 arguments\n")]
    [InlineData("flush 1", null, "bad argument count 1 to flush, expected 0 arguments\n")]
    [InlineData("bogus", null, "command \"bogus\" not found\n")]
    public void FailedCommandsPrintQemuIoMessagesAndExitOne(string command, string? stdoutLine, string stderr)
    {
        var (exit, lines, err) = Io(command);
        Assert.Equal(1, exit);
        Assert.Equal(stderr, err);
        if (stdoutLine is null) Assert.Empty(lines);
        else Assert.Equal(stdoutLine, Assert.Single(lines));
    }

    [Fact]
    public void LaterCommandsStillRunAfterAFailure()
    {
        var (exit, lines, _) = Io("read 1M 1", "write -q 0 1", "read -P 0xcd 0 1");
        Assert.Equal(1, exit);
        Assert.Equal("read 1/1 bytes at offset 0", lines[1]);
    }

    [Fact]
    public void ReadOnlyRefusesWrites()
    {
        var (exit, stdout, stderr) = _cli.Run("io", "-r", "-c", "write 0 1", "@d.raw");
        Assert.Equal(1, exit);
        Assert.Equal("", stdout);
        Assert.Equal("vdisk: Block node is read-only\n", stderr);
    }

    [Fact]
    public void ProbedRawWarnsWhenOpenedForWriting()
    {
        var (_, _, stderr) = _cli.Run("io", "-c", "read -q 0 1", "@d.raw");
        Assert.StartsWith("WARNING: Image format was not specified for ", stderr);
        Assert.Equal("", _cli.Run("io", "-r", "-c", "read -q 0 1", "@d.raw").Err);
    }

    [Fact]
    public void AbortExitsWith134AndSkipsLaterCommands()
    {
        var (exit, lines, _) = Io("write -q 0 1", "abort", "read 0 1");
        Assert.Equal(134, exit);
        Assert.Empty(lines);
    }

    [Fact]
    public void OpenFailureAndBadCache()
    {
        var missing = _cli.Run("io", "-c", "read 0 1", "@nope.raw");
        Assert.Equal(1, missing.Exit);
        Assert.Equal($"vdisk: can't open device {_cli.PathOf("nope.raw")}: Could not open '{_cli.PathOf("nope.raw")}': No such file or directory\n", missing.Err);
        var cache = _cli.Run("io", "-t", "foo", "-c", "read 0 1", "@d.raw");
        Assert.Equal((1, "vdisk: Invalid cache option: foo\n"), (cache.Exit, cache.Err));
    }

    [Fact]
    public void BenchPrintsHeaderAndCompletion()
    {
        var (exit, stdout, stderr) = _cli.Run("bench", "-f", "raw", "-w", "-c", "100", "-d", "4", "-S", "10000", "--pattern=7", "--flush-interval=10", "@d.raw");
        Assert.Equal("", stderr);
        Assert.Equal(0, exit);
        var lines = stdout.Split('\n');
        Assert.Equal("Sending 100 write requests, 4096 bytes each, 4 in parallel (starting at offset 0, step size 10000)", lines[0]);
        Assert.Equal("Sending flush every 10 requests", lines[1]);
        Assert.Matches(@"^Run completed in \d+\.\d{3} seconds\.$", lines[2]);
        var data = File.ReadAllBytes(_cli.PathOf("d.raw"));
        Assert.Equal(7, data[990000]);
        Assert.Equal(0, data[990000 + 4096]);
    }

    [Fact]
    public void BenchWrapsAtTheEndOfTheImage()
    {
        // 1000 one-byte writes 100 bytes apart from near the end: they wrap to the start instead of failing.
        var (exit, _, stderr) = _cli.Run("bench", "-q", "-f", "raw", "-w", "--pattern=9", "-c", "20", "-o", "1048500", "-s", "1", "-S", "100", "@d.raw");
        Assert.Equal((0, ""), (exit, stderr));
        var data = File.ReadAllBytes(_cli.PathOf("d.raw"));
        Assert.Equal(9, data[1048500]);
        Assert.Equal(9, data[1048600 % 1048576]);
    }

    [Theory]
    [InlineData(new[] { "-c", "5", "-s", "2M" }, "vdisk: Failed request: Input/output error\n")]
    [InlineData(new[] { "--flush-interval=5" }, "vdisk: --flush-interval is only available in write tests\n")]
    [InlineData(new[] { "-w", "-d", "8", "--flush-interval=5" }, "vdisk: Flush interval can't be smaller than depth\n")]
    [InlineData(new[] { "-c", "x" }, "vdisk: Invalid request count specified\n")]
    [InlineData(new[] { "-d", "0" }, "vdisk: Invalid queue depth specified\n")]
    [InlineData(new[] { "--pattern=300", "-w" }, "vdisk: Invalid pattern byte specified\n")]
    public void BenchErrors(string[] options, string expected)
    {
        var args = new[] { "bench", "-f", "raw" }.Concat(options).Append("@d.raw").ToArray();
        var (exit, _, stderr) = _cli.Run(args);
        Assert.Equal(1, exit);
        Assert.Equal(expected, stderr);
    }
}
