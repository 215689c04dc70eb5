using Vdisk.BlockIO;
using Vdisk.Formats.Foreign;

namespace Vdisk.Images;

/// <summary>
/// The formats known to a program, registered by hand, and QEMU-style probing among them. Besides the drivers it
/// knows the signatures of the formats qemu-img probes that have no driver here (<see cref="ForeignFormats"/>), so
/// that such a file is refused by name rather than read as raw.
/// </summary>
public sealed class ImageFormatRegistry
{
    /// <summary>How many bytes probing looks at, as QEMU's BLOCK_PROBE_BUF_SIZE; a shorter file reads as zeros past its end.</summary>
    public const int ProbeBytes = 512;

    private readonly List<ImageFormat> _formats = new();
    private readonly List<ForeignFormat> _foreign = new();

    /// <summary>Every format this library ships, in probing order, and the foreign formats qemu-img 7.2 probes.</summary>
    public static ImageFormatRegistry Default { get; } = CreateDefault();

    private static ImageFormatRegistry CreateDefault()
    {
        var registry = new ImageFormatRegistry();
        registry.Register(new Formats.Qcow2.Qcow2Format());
        registry.Register(new Formats.Raw.RawFormat());
        foreach (var foreign in ForeignFormats.All) registry.RegisterForeign(foreign);
        return registry;
    }

    public void Register(ImageFormat format)
    {
        if (Find(format.Name) is not null) throw new ArgumentException($"format '{format.Name}' is already registered");
        _formats.Add(format);
    }

    /// <summary>Adds the signature of a format without a driver; a driver of the same name takes precedence.</summary>
    public void RegisterForeign(ForeignFormat format)
    {
        if (_foreign.Any(f => f.Name == format.Name)) throw new ArgumentException($"foreign format '{format.Name}' is already registered");
        _foreign.Add(format);
    }

    public IReadOnlyList<ImageFormat> Formats => _formats;

    public ImageFormat? Find(string name) => _formats.FirstOrDefault(f => f.Name == name);

    public ImageFormat Get(string name) => Find(name)
        ?? throw new DiskImageException(DiskImageErrorKind.InvalidArgument, null, $"Unknown file format '{name}'");

    /// <summary>
    /// Picks the format whose probe scores highest on the first bytes of the device (QEMU's bdrv_probe_all; an empty
    /// file is raw). A foreign format that wins is refused with its name: <c>Unknown file format 'vmdk'</c>.
    /// </summary>
    public ImageFormat Probe(BlockDevice device)
    {
        long length = device.Length;
        if (length == 0 && Find("raw") is { } raw) return raw;
        var header = new byte[ProbeBytes]; // zero-padded past a short file's end, as QEMU's probe buffer is
        device.Read(0, header.AsMemory());
        var (driver, foreign) = Recognise(header, device.Name);
        if (foreign is not null)
            throw new DiskImageException(DiskImageErrorKind.UnsupportedFeature, device.Name,
                $"Unknown file format '{foreign.Name}' ({foreign.Description}): vdisk has no driver for it; open it as raw to read its bytes");
        return driver ?? throw new DiskImageException(DiskImageErrorKind.InvalidFormat, device.Name, "Could not determine image format");
    }

    /// <summary>
    /// The format the bytes look like: a driver, or a foreign format (exactly one of the two is set unless nothing
    /// scores). Ties go to the one registered first, drivers before foreign formats, as QEMU's list order decides.
    /// </summary>
    public (ImageFormat? Driver, ForeignFormat? Foreign) Recognise(ReadOnlySpan<byte> header, string? path)
    {
        ImageFormat? best = null;
        ForeignFormat? bestForeign = null;
        int bestScore = 0;
        foreach (var f in _formats)
        {
            int score = f.Probe(header, path);
            if (score > bestScore) { best = f; bestScore = score; }
        }
        foreach (var f in _foreign)
        {
            if (Find(f.Name) is not null) continue;
            int score = f.Probe(header, path);
            if (score > bestScore) { best = null; bestForeign = f; bestScore = score; }
        }
        return (best, bestForeign);
    }
}
