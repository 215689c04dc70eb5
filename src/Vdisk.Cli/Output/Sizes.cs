using System.Globalization;

namespace Vdisk.Cli.Output;

internal enum SizeParse { Ok, Invalid, TooLarge }

/// <summary>qemu's size syntax (qemu_strtosz) and its three ways of printing sizes and times.</summary>
internal static class Sizes
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>
    /// "1.5M", "64k", "0x1000", "512b", " +5": decimal or hex integer, optional fraction (decimal only, then a
    /// suffix other than B is required), optional suffix k/M/G/T/P/E (1024-based, either case) or b/B.
    /// The fraction is rounded to the nearest byte. Values above <see cref="long.MaxValue"/> are TooLarge.
    /// </summary>
    public static SizeParse TryParse(string text, out long value)
    {
        value = 0;
        int i = 0;
        while (i < text.Length && char.IsWhiteSpace(text[i])) i++;
        if (i < text.Length && text[i] == '+') i++;
        bool hex = i + 1 < text.Length && text[i] == '0' && (text[i + 1] == 'x' || text[i + 1] == 'X');
        if (hex) i += 2;
        int digitsStart = i;
        while (i < text.Length && (hex ? Uri.IsHexDigit(text[i]) : char.IsAsciiDigit(text[i]))) i++;
        if (i == digitsStart) return SizeParse.Invalid;
        if (!UInt128.TryParse(text.AsSpan(digitsStart, i - digitsStart), hex ? NumberStyles.AllowHexSpecifier : NumberStyles.None, Inv, out var whole))
            return SizeParse.TooLarge;
        double fraction = 0;
        if (i < text.Length && text[i] == '.')
        {
            if (hex) return SizeParse.Invalid;
            int fracStart = i;
            i++;
            while (i < text.Length && char.IsAsciiDigit(text[i])) i++;
            fraction = double.Parse("0" + text[fracStart..i] + (i - fracStart == 1 ? "0" : ""), Inv);
        }
        ulong unit = 1;
        if (i < text.Length)
        {
            unit = Unit(text[i]);
            if (unit == 0) return SizeParse.Invalid;
            i++;
        }
        if (i != text.Length) return SizeParse.Invalid;
        if (unit == 1 && fraction != 0) return SizeParse.Invalid;
        UInt128 total = whole * unit + (UInt128)Math.Round(fraction * unit, MidpointRounding.AwayFromZero);
        if (total > long.MaxValue) return SizeParse.TooLarge;
        value = (long)total;
        return SizeParse.Ok;
    }

    private static ulong Unit(char c) => c switch
    {
        'b' or 'B' => 1,
        'k' or 'K' => 1UL << 10,
        'm' or 'M' => 1UL << 20,
        'g' or 'G' => 1UL << 30,
        't' or 'T' => 1UL << 40,
        'p' or 'P' => 1UL << 50,
        'e' or 'E' => 1UL << 60,
        _ => 0,
    };

    /// <summary>qemu-img info's sizes: three significant digits and a binary unit ("4 MiB", "1.5 GiB", "0 B").</summary>
    public static string ToHuman(long bytes)
    {
        string[] suffixes = { "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei" };
        // Switch to the next unit once the number would reach 1000, so it never needs four digits.
        int exponent = bytes == 0 ? 0 : Math.ILogB(bytes / (1000.0 / 1024.0)) + 1;
        int i = Math.Max(0, (exponent - 1) / 10);
        double scaled = bytes / (double)(1UL << (i * 10));
        return FormatG3(scaled) + " " + suffixes[i] + "B";
    }

    /// <summary>C's "%0.3g": three significant digits, trailing zeros dropped, exponent form at 1000 and above.</summary>
    public static string FormatG3(double value)
    {
        var s = value.ToString("G3", Inv);
        int e = s.IndexOf('E');
        if (e < 0) return s;
        var exp = int.Parse(s[(e + 1)..], Inv);
        return s[..e] + "e" + (exp < 0 ? "-" : "+") + Math.Abs(exp).ToString("00", Inv);
    }

    /// <summary>qemu-io's byte counts and rates: "4 KiB", "3.696 MiB", "995.039727 bytes" (cvtstr).</summary>
    public static string ToIoString(double value)
    {
        if (double.IsInfinity(value)) return "inf EiB";
        string suffix;
        string number;
        (double div, suffix) = value switch
        {
            >= 1L << 60 => ((double)(1L << 60), " EiB"),
            >= 1L << 50 => (1L << 50, " PiB"),
            >= 1L << 40 => (1L << 40, " TiB"),
            >= 1L << 30 => (1L << 30, " GiB"),
            >= 1L << 20 => (1L << 20, " MiB"),
            >= 1L << 10 => (1L << 10, " KiB"),
            _ => (1, " bytes"),
        };
        number = (value / div).ToString(div == 1 ? "F6" : "F3", Inv);
        int trim = number.IndexOf(".000", StringComparison.Ordinal);
        if (trim >= 0) number = number[..trim];
        return number + suffix;
    }

    /// <summary>C's "%.4f", including its "inf" for a zero-length interval.</summary>
    public static string ToFixed4(double value) => double.IsInfinity(value) ? "inf" : value.ToString("F4", Inv);

    /// <summary>qemu-io's elapsed time: "00.12 sec" under a second, "H:MM:SS.ss" from one second on.</summary>
    public static string ToIoTime(TimeSpan elapsed)
    {
        long wholeSeconds = (long)elapsed.TotalSeconds;
        double fraction = elapsed.TotalSeconds - wholeSeconds;
        if (wholeSeconds == 0) return fraction.ToString("00.00", Inv) + " sec";
        return string.Create(Inv, $"{wholeSeconds / 3600}:{wholeSeconds / 60 % 60:00}:{wholeSeconds % 60 + fraction:00.00}");
    }
}
