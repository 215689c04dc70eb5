using Vdisk.BlockIO;

namespace Vdisk.Images;

/// <summary>The formats known to a program, registered by hand, and QEMU-style probing among them.</summary>
public sealed class ImageFormatRegistry
{
    private readonly List<ImageFormat> _formats = new();

    /// <summary>Every format this library ships, in probing order.</summary>
    public static ImageFormatRegistry Default { get; } = CreateDefault();

    private static ImageFormatRegistry CreateDefault()
    {
        var registry = new ImageFormatRegistry();
        registry.Register(new Formats.Qcow2.Qcow2Format());
        registry.Register(new Formats.Raw.RawFormat());
        return registry;
    }

    public void Register(ImageFormat format)
    {
        if (Find(format.Name) is not null) throw new ArgumentException($"format '{format.Name}' is already registered");
        _formats.Add(format);
    }

    public IReadOnlyList<ImageFormat> Formats => _formats;

    public ImageFormat? Find(string name) => _formats.FirstOrDefault(f => f.Name == name);

    public ImageFormat Get(string name) => Find(name)
        ?? throw new DiskImageException(DiskImageErrorKind.InvalidArgument, null, $"Unknown file format '{name}'");

    /// <summary>Picks the format whose probe scores highest on the first bytes of the device (QEMU's bdrv_probe).</summary>
    public ImageFormat Probe(BlockDevice device)
    {
        var header = new byte[Math.Min(2048, Math.Max(device.Length, 0))];
        device.Read(0, header.AsMemory());
        ImageFormat? best = null;
        int bestScore = 0;
        foreach (var f in _formats)
        {
            int score = f.Probe(header, device.Name);
            if (score > bestScore) { best = f; bestScore = score; }
        }
        return best ?? throw new DiskImageException(DiskImageErrorKind.InvalidFormat, device.Name, "Could not determine image format");
    }
}
