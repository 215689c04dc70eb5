namespace Vdisk.Cli.Commands;

/// <summary>
/// What qemu-img create's "Formatting ..." line shows for each format: the options in qemu-img's order, the
/// defaults it always prints, and which options are sizes (printed in bytes whatever suffix was given).
/// Options a format does not list here are printed after the known ones, in the order given.
/// </summary>
internal static class CreateOptionTable
{
    internal sealed record Entry(string Name, string? Default = null, bool IsSize = false);

    private static readonly Entry[] Raw =
    {
        new("size", IsSize: true),
        new("preallocation"),
    };

    private static readonly Entry[] Qcow2 =
    {
        new("encryption"),
        new("cluster_size", "65536", IsSize: true),
        new("extended_l2", "off"),
        new("preallocation"),
        new("compression_type", "zlib"),
        new("size", IsSize: true),
        new("backing_file"),
        new("backing_fmt"),
        new("encrypt.format"),
        new("compat"),
        new("data_file"),
        new("data_file_raw"),
        new("lazy_refcounts", "off"),
        new("refcount_bits", "16"),
    };

    private static readonly Entry[] Generic =
    {
        new("size", IsSize: true),
        new("backing_file"),
        new("backing_fmt"),
    };

    public static IReadOnlyList<Entry> For(string format) => format switch
    {
        "raw" => Raw,
        "qcow2" => Qcow2,
        _ => Generic,
    };

    /// <summary>The "fmt=... a=b ..." part of the Formatting line; <paramref name="options"/> includes "size".</summary>
    public static string Describe(string format, IReadOnlyList<KeyValuePair<string, string>> options)
    {
        var table = For(format);
        var parts = new List<string> { "fmt=" + format };
        foreach (var entry in table)
        {
            string? value = options.FirstOrDefault(o => o.Key == entry.Name).Value ?? entry.Default;
            if (value is null) continue;
            if (entry.IsSize && Output.Sizes.TryParse(value, out long bytes) == Output.SizeParse.Ok)
                value = bytes.ToString(System.Globalization.CultureInfo.InvariantCulture);
            parts.Add($"{entry.Name}={value}");
        }
        foreach (var (key, value) in options)
            if (!table.Any(e => e.Name == key)) parts.Add($"{key}={value}");
        return string.Join(' ', parts);
    }
}
