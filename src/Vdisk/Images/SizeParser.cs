using System.Globalization;

namespace Vdisk.Images;

/// <summary>Sizes as qemu writes them: a number with an optional 1024-based suffix (k/K, M, G, T, P, E; B = bytes).</summary>
public static class SizeParser
{
    public static bool TryParse(string text, out long value)
    {
        value = 0;
        text = text.Trim();
        if (text.Length == 0) return false;
        int shift = 0;
        char last = text[^1];
        switch (char.ToUpperInvariant(last))
        {
            case 'B': shift = 0; break;
            case 'K': shift = 10; break;
            case 'M': shift = 20; break;
            case 'G': shift = 30; break;
            case 'T': shift = 40; break;
            case 'P': shift = 50; break;
            case 'E': shift = 60; break;
            default: last = '\0'; break;
        }
        var number = last == '\0' ? text : text[..^1];
        if (number.Length == 0 || number.StartsWith('-')) return false;
        if (!double.TryParse(number, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double d)) return false;
        double bytes = d * Math.Pow(2, shift);
        if (bytes >= 9.2233720368547758E18 || (shift == 0 && number.Contains('.'))) return false;
        value = (long)bytes;
        return true;
    }
}
