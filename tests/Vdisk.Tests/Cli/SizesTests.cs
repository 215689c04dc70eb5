using Vdisk.Cli.Output;
using Xunit;

namespace Vdisk.Tests.Cli;

public class SizesTests
{
    // Expected values come from running qemu-img create with each size (qemu 7.2).
    [Theory]
    [InlineData("0", 0L)]
    [InlineData("1000", 1000L)]
    [InlineData("64k", 65536L)]
    [InlineData("1K", 1024L)]
    [InlineData("1m", 1048576L)]
    [InlineData("1.5M", 1572864L)]
    [InlineData("1.25M", 1310720L)]
    [InlineData("1.1k", 1126L)]
    [InlineData("1.7k", 1741L)]
    [InlineData("1.333k", 1365L)]
    [InlineData("0.001k", 1L)]
    [InlineData("5.k", 5120L)]
    [InlineData("1.0", 1L)]
    [InlineData("1b", 1L)]
    [InlineData("0x10", 16L)]
    [InlineData("010", 10L)]
    [InlineData(" 5", 5L)]
    [InlineData("+5", 5L)]
    [InlineData("1t", 1099511627776L)]
    [InlineData("1.5E", 1729382256910270464L)]
    [InlineData("7.999E", 9222219115350168960L)]
    [InlineData("9223372036854775807", long.MaxValue)]
    public void ParsesLikeQemu(string text, long expected)
    {
        Assert.Equal(SizeParse.Ok, Sizes.TryParse(text, out long value));
        Assert.Equal(expected, value);
    }

    [Theory]
    [InlineData("")]
    [InlineData("1x")]
    [InlineData("1.5")]
    [InlineData("1.5b")]
    [InlineData("5k5")]
    [InlineData("1kB")]
    [InlineData(".5k")]
    [InlineData("1e3")]
    [InlineData("0x1.8k")]
    [InlineData("-1")]
    public void RejectsWhatQemuRejects(string text) => Assert.Equal(SizeParse.Invalid, Sizes.TryParse(text, out _));

    [Theory]
    [InlineData("8E")]
    [InlineData("16E")]
    [InlineData("9223372036854775808")]
    [InlineData("18446744073709551616")]
    public void ValuesAboveInt64AreTooLarge(string text) => Assert.Equal(SizeParse.TooLarge, Sizes.TryParse(text, out _));

    [Theory]
    [InlineData(0L, "0 B")]
    [InlineData(1000L, "0.977 KiB")]
    [InlineData(999L, "999 B")]
    [InlineData(69632L, "68 KiB")]
    [InlineData(397312L, "388 KiB")]
    [InlineData(4194304L, "4 MiB")]
    [InlineData(1610612736L, "1.5 GiB")]
    [InlineData(1073745920L, "1 GiB")]
    [InlineData(197120L, "192 KiB")]
    [InlineData(1023487L, "999 KiB")]
    [InlineData(1023900L, "1e+03 KiB")]
    public void HumanSizesHaveThreeSignificantDigits(long bytes, string expected) => Assert.Equal(expected, Sizes.ToHuman(bytes));

    [Theory]
    [InlineData(0d, "0 bytes")]
    [InlineData(32d, "32 bytes")]
    [InlineData(995.039727, "995.039727 bytes")]
    [InlineData(4096d, "4 KiB")]
    [InlineData(3.696 * 1048576, "3.696 MiB")]
    [InlineData(2147483136d, "2 GiB")]
    [InlineData(1024.0005 * 1024, "1 MiB")]
    public void IoSizesTrimATrailingPointZeroZeroZero(double value, string expected) => Assert.Equal(expected, Sizes.ToIoString(value));

    [Fact]
    public void IoTimesUseSecondsBelowOneSecondAndClockFormatAbove()
    {
        Assert.Equal("00.65 sec", Sizes.ToIoTime(TimeSpan.FromSeconds(0.65)));
        Assert.Equal("00.00 sec", Sizes.ToIoTime(TimeSpan.FromTicks(10)));
        Assert.Equal("0:00:09.17", Sizes.ToIoTime(TimeSpan.FromSeconds(9.17)));
        Assert.Equal("1:01:01.50", Sizes.ToIoTime(TimeSpan.FromSeconds(3661.5)));
    }
}
