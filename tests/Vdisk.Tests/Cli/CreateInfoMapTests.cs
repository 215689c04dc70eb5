using Xunit;

namespace Vdisk.Tests.Cli;

public class CreateInfoMapTests : IDisposable
{
    private readonly CliHarness _cli = new();

    public void Dispose() => _cli.Dispose();

    [Fact]
    public void CreatePrintsQemuImgsFormattingLineAndMakesTheFile()
    {
        var (exit, stdout, stderr) = _cli.Run("create", "-f", "raw", "@a.raw", "1.5M");
        Assert.Equal(0, exit);
        Assert.Equal($"Formatting '{_cli.PathOf("a.raw")}', fmt=raw size=1572864\n", stdout);
        Assert.Equal("", stderr);
        Assert.Equal(1572864, new FileInfo(_cli.PathOf("a.raw")).Length);
    }

    [Fact]
    public void CreateTakesSizeFromOptionsAndPrintsPreallocationAfterSize()
    {
        var (exit, stdout, _) = _cli.Run("create", "-o", "preallocation=full", "-o", "size=8k", "@b.raw");
        Assert.Equal(0, exit);
        Assert.EndsWith("fmt=raw size=8192 preallocation=full\n", stdout);
    }

    [Fact]
    public void QuietCreatePrintsNothing()
    {
        var (exit, stdout, _) = _cli.Run("create", "-q", "@q.raw", "1k");
        Assert.Equal(0, exit);
        Assert.Equal("", stdout);
        Assert.True(File.Exists(_cli.PathOf("q.raw")));
    }

    [Theory]
    [InlineData(new[] { "create", "@x.raw" }, "vdisk: {0}: Image creation needs a size parameter\n")]
    [InlineData(new[] { "create", "@x.raw", "1k", "-o", "size=2k" }, "vdisk: {0}: The image size must be specified only once\n")]
    [InlineData(new[] { "create", "-f", "foo", "@x.raw", "1k" }, "vdisk: {0}: Unknown file format 'foo'\n")]
    [InlineData(new[] { "create", "-o", "foo=bar", "@x.raw", "1k" }, "vdisk: {0}: Invalid parameter 'foo'\n")]
    [InlineData(new[] { "create", "-b", "y.raw", "-F", "raw", "@x.raw" }, "vdisk: {0}: Backing file not supported for file format 'raw'\n")]
    [InlineData(new[] { "create", "@x.raw", "8E" }, "vdisk: Invalid image size specified. Must be between 0 and 9223372036854775807.\n")]
    [InlineData(new[] { "create" }, "vdisk: Expecting image file name\nTry 'vdisk --help' for more information\n")]
    [InlineData(new[] { "create", "@x.raw", "1k", "extra" }, "vdisk: Unexpected argument: extra\nTry 'vdisk --help' for more information\n")]
    public void CreateErrorsMatchQemuImg(string[] args, string expected)
    {
        var (exit, stdout, stderr) = _cli.Run(args);
        Assert.Equal(1, exit);
        Assert.Equal("", stdout);
        Assert.Equal(string.Format(expected, _cli.PathOf("x.raw")), stderr);
        Assert.False(File.Exists(_cli.PathOf("x.raw")));
    }

    [Fact]
    public void InfoHumanAndJson()
    {
        _cli.Run("create", "-q", "@i.raw", "4M");
        var human = _cli.Run("info", "@i.raw");
        Assert.Equal(0, human.Exit);
        var lines = human.Out.Split('\n');
        Assert.Equal($"image: {_cli.PathOf("i.raw")}", lines[0]);
        Assert.Equal("file format: raw", lines[1]);
        Assert.Equal("virtual size: 4 MiB (4194304 bytes)", lines[2]);
        Assert.StartsWith("disk size: ", lines[3]);

        var json = _cli.Run("info", "--output=json", "@i.raw");
        Assert.Matches("^\\{\n    \"virtual-size\": 4194304,\n    \"filename\": \".*i.raw\",\n    \"format\": \"raw\",\n    \"actual-size\": \\d+,\n    \"dirty-flag\": false\n\\}\n$", json.Out);
    }

    [Fact]
    public void InfoBackingChainJsonIsAnArray()
    {
        _cli.Run("create", "-q", "@c.raw", "1M");
        var (exit, stdout, _) = _cli.Run("info", "--backing-chain", "--output", "json", "@c.raw");
        Assert.Equal(0, exit);
        Assert.StartsWith("[\n    {\n        \"virtual-size\": 1048576,", stdout);
        Assert.EndsWith("    }\n]\n", stdout);
    }

    [Fact]
    public void InfoOnAMissingFileSaysCouldNotOpen()
    {
        var (exit, _, stderr) = _cli.Run("info", "@missing.raw");
        Assert.Equal(1, exit);
        var p = _cli.PathOf("missing.raw");
        Assert.Equal($"vdisk: Could not open '{p}': Could not open '{p}': No such file or directory\n", stderr);
    }

    [Fact]
    public void InfoRejectsUnknownOutputFormat()
    {
        var (exit, _, stderr) = _cli.Run("info", "--output=xml", "@whatever");
        Assert.Equal(1, exit);
        Assert.Equal("vdisk: --output must be used with human or json as argument.\n", stderr);
    }

    [Fact]
    public void MapMergesRangesAndPrintsQemuJsonLines()
    {
        _cli.Run("create", "-q", "-f", "raw", "@m.raw", "1M");
        Assert.Equal(0, _cli.Run("io", "-f", "raw", "-c", "write -P 1 64k 64k", "-c", "write -P 2 128k 64k", "@m.raw").Exit);
        var (exit, stdout, _) = _cli.Run("map", "-f", "raw", "--output=json", "@m.raw");
        Assert.Equal(0, exit);
        Assert.Equal(
            "[{ \"start\": 0, \"length\": 4096, \"depth\": 0, \"present\": true, \"zero\": false, \"data\": true, \"offset\": 0},\n" +
            "{ \"start\": 4096, \"length\": 61440, \"depth\": 0, \"present\": true, \"zero\": true, \"data\": false, \"offset\": 4096},\n" +
            "{ \"start\": 65536, \"length\": 131072, \"depth\": 0, \"present\": true, \"zero\": false, \"data\": true, \"offset\": 65536},\n" +
            "{ \"start\": 196608, \"length\": 851968, \"depth\": 0, \"present\": true, \"zero\": true, \"data\": false, \"offset\": 196608}]\n",
            stdout);

        var human = _cli.Run("map", "-f", "raw", "--start-offset=64k", "@m.raw");
        Assert.Equal($"Offset          Length          Mapped to       File\n0x10000         0x20000         0x10000         {_cli.PathOf("m.raw")}\n", human.Out);
    }

    [Fact]
    public void MapOfAnEmptyRangePrintsOneEmptyEntry()
    {
        _cli.Run("create", "-q", "@e.raw", "1M");
        var (_, stdout, _) = _cli.Run("map", "--output=json", "--start-offset=2M", "@e.raw");
        Assert.Equal("[{ \"start\": 2097152, \"length\": 0, \"depth\": 0, \"present\": false, \"zero\": false, \"data\": false}]\n", stdout);
    }

    [Fact]
    public void TopLevelUsageErrors()
    {
        Assert.Equal((1, "", "vdisk: Command not found: frob\nTry 'vdisk --help' for more information\n"), _cli.Run("frob"));
        Assert.Equal(1, _cli.Run().Exit);
        var help = _cli.Run("--help");
        Assert.Equal(0, help.Exit);
        Assert.Contains("create [-q] [-f fmt]", help.Out);
        Assert.StartsWith("vdisk version ", _cli.Run("--version").Out);
    }
}
