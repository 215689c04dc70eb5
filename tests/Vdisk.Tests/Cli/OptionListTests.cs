using Vdisk.Cli.Parsing;
using Xunit;

namespace Vdisk.Tests.Cli;

public class OptionListTests
{
    [Fact]
    public void SplitsOnCommasAndKeepsOrder()
    {
        var list = OptionList.Parse("cluster_size=4k,lazy_refcounts=on");
        Assert.Equal(new[] { "cluster_size", "lazy_refcounts" }, list.Select(p => p.Key));
        Assert.Equal(new[] { "4k", "on" }, list.Select(p => p.Value));
    }

    [Fact]
    public void DoubledCommaIsALiteralComma()
    {
        var list = OptionList.Parse("backing_file=a,,b.qcow2,backing_fmt=qcow2");
        Assert.Equal("a,b.qcow2", list[0].Value);
        Assert.Equal("qcow2", list[1].Value);
    }

    [Fact]
    public void BareKeyMeansOnAndLaterValuesWin()
    {
        var list = OptionList.Parse("lazy_refcounts,compat=0.10,compat=1.1,");
        Assert.Equal(2, list.Count);
        Assert.Equal("on", list[0].Value);
        Assert.Equal("1.1", list[1].Value);
    }

    [Theory]
    [InlineData("")]
    [InlineData(",a=b")]
    [InlineData("=x")]
    public void MalformedListsAreRejected(string text)
    {
        var e = Assert.Throws<Vdisk.Cli.CliException>(() => OptionList.Parse(text));
        Assert.StartsWith("Invalid option list: ", e.Message);
    }

    [Theory]
    [InlineData("help", true)]
    [InlineData("?", true)]
    [InlineData("size=help", false)]
    public void RecognisesHelp(string text, bool expected) => Assert.Equal(expected, OptionList.IsHelp(text));
}
