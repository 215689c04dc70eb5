using Vdisk.Cli.Parsing;
using Xunit;

namespace Vdisk.Tests.Cli;

public class GetOptTests
{
    private static readonly LongOption[] Longs =
    {
        new("output", true, "output"), new("backing-chain", false, "backing-chain"), new("backing-format", true, "bf"),
    };

    [Theory]
    [InlineData("-f qcow2 x")]
    [InlineData("-fqcow2 x")]
    [InlineData("x -f qcow2")]
    public void ShortOptionValueMayBeSeparateAttachedOrAfterOperands(string args)
    {
        var p = GetOpt.Parse(args.Split(' '), "f:q");
        Assert.Equal(new ParsedOption("f", "qcow2"), Assert.Single(p.Options));
        Assert.Equal(new[] { "x" }, p.Positionals);
    }

    [Fact]
    public void ClusteredFlagsEndAtTheFirstOptionTakingAValue()
    {
        var p = GetOpt.Parse(new[] { "-quf", "raw" }, "f:qu");
        Assert.Equal(new[] { "q", "u", "f" }, p.Options.Select(o => o.Key));
        Assert.Equal("raw", p.Options[2].Value);
    }

    [Theory]
    [InlineData("--output=json")]
    [InlineData("--output json")]
    [InlineData("--out=json")]
    public void LongOptionsTakeEqualsOrSeparateValuesAndUniquePrefixes(string args)
    {
        var p = GetOpt.Parse(args.Split(' '), "", Longs);
        Assert.Equal(new ParsedOption("output", "json"), Assert.Single(p.Options));
    }

    [Fact]
    public void DoubleDashEndsOptions()
    {
        var p = GetOpt.Parse(new[] { "-q", "--", "-f", "--output=x" }, "f:q", Longs);
        Assert.Single(p.Options);
        Assert.Equal(new[] { "-f", "--output=x" }, p.Positionals);
    }

    [Fact]
    public void StopAtOperandLeavesTheRestToTheCommand()
    {
        var p = GetOpt.Parse(new[] { "create", "-f", "raw" }, "hV", stopAtOperand: true);
        Assert.Empty(p.Options);
        Assert.Equal(new[] { "create", "-f", "raw" }, p.Positionals);
    }

    [Theory]
    [InlineData(false, new[] { "-x" }, "unrecognized option '-x'")]
    [InlineData(false, new[] { "--foo" }, "unrecognized option '--foo'")]
    [InlineData(false, new[] { "-f" }, "missing argument for option '-f'")]
    [InlineData(false, new[] { "--output" }, "missing argument for option '--output'")]
    [InlineData(false, new[] { "--backing" }, "unrecognized option '--backing'")]
    [InlineData(true, new[] { "-x" }, "invalid option -- 'x'")]
    [InlineData(true, new[] { "--foo=1" }, "unrecognized option '--foo=1'")]
    [InlineData(true, new[] { "-f" }, "option requires an argument -- 'f'")]
    [InlineData(true, new[] { "--output" }, "option '--output' requires an argument")]
    [InlineData(true, new[] { "--backing-chain=1" }, "option '--backing-chain' doesn't allow an argument")]
    public void ErrorsUseTheToolsWording(bool glibc, string[] args, string message)
    {
        var style = glibc ? GetOptStyle.Glibc : GetOptStyle.QemuImg;
        var e = Assert.Throws<GetOptException>(() => GetOpt.Parse(args, "f:q", Longs, style));
        Assert.Equal(message, e.Message);
    }

    [Fact]
    public void NegativeNumbersAreOptionsAsInGetopt()
    {
        var e = Assert.Throws<GetOptException>(() => GetOpt.Parse(new[] { "x", "-5" }, "f:"));
        Assert.Equal("unrecognized option '-5'", e.Message);
    }

    [Fact]
    public void LoneDashIsAnOperand()
    {
        Assert.Equal(new[] { "-" }, GetOpt.Parse(new[] { "-" }, "f:").Positionals);
    }
}
