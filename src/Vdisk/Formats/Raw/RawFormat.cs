using Vdisk.BlockIO;
using Vdisk.Images;

namespace Vdisk.Formats.Raw;

/// <summary>The raw format: guest offset = file offset. Probes last, with the lowest score, as in QEMU.</summary>
public sealed class RawFormat : ImageFormat
{
    public override string Name => "raw";
    public override IReadOnlyCollection<string> CreateOptionNames { get; } = new[] { "size", "preallocation" };

    public override int Probe(ReadOnlySpan<byte> header, string? path) => 1;

    /// <summary>Raw has no metadata to protect: it shares what its user shares, and resizes only when asked to.</summary>
    public override ImagePermissions NeverShared => ImagePermissions.None;
    public override bool GrowsFile => false;

    public override DiskImage Open(BlockDevice device, ImageOpenOptions options)
    {
        if (options.Snapshot is not null)
        {
            device.Dispose();
            throw new DiskImageException(DiskImageErrorKind.UnsupportedFeature, device.Name, "raw images have no internal snapshots");
        }
        return new RawImage(device, options.ReadOnly, options.FormatProbed ? options.Registry : null);
    }

    public override void Create(BlockDevice device, ImageCreateOptions options)
    {
        CheckCreateOptions(options, device.Name);
        var prealloc = options.Get("preallocation") ?? "off";
        // As qemu-img: the file is made a whole number of 512-byte sectors long.
        options = options with { Size = RawImage.RoundUpToSector(options.Size) };
        device.SetLength(options.Size);
        switch (prealloc)
        {
            case "off":
                // QEMU allocates the first block so that O_DIRECT alignment can be probed later; match its layout.
                if (options.Size > 0) device.Write(0, new byte[(int)Math.Min(4096, options.Size)].AsMemory());
                break;
            case "falloc":
                device.Allocate(0, options.Size);
                break;
            case "full":
                WriteZeros(device, 0, options.Size);
                break;
        }
    }

    public override void CheckCreateOptions(ImageCreateOptions options, string path)
    {
        foreach (var key in options.Options.Keys)
            if (!CreateOptionNames.Contains(key))
                throw new DiskImageException(DiskImageErrorKind.InvalidArgument, path, $"Invalid parameter '{key}'");
        // qemu-img's two refusals: a mode raw does not have, and a word that is no mode at all.
        switch (options.Get("preallocation") ?? "off")
        {
            case "off" or "falloc" or "full": return;
            case "metadata": throw new DiskImageException(DiskImageErrorKind.InvalidArgument, path, "Unsupported preallocation mode: metadata");
            case var other: throw new DiskImageException(DiskImageErrorKind.InvalidArgument, path, $"invalid parameter value: {other}");
        }
    }

    internal static void WriteZeros(BlockDevice device, long offset, long length)
    {
        var zeros = new byte[1 << 20];
        for (long done = 0; done < length;)
        {
            int n = (int)Math.Min(zeros.Length, length - done);
            device.Write(offset + done, zeros.AsMemory(0, n));
            done += n;
        }
    }
}
