using Vdisk.Images;

namespace Vdisk.Formats.Qcow2;

/// <summary>The qcow2 create options of qemu-img (-o), parsed and checked with qemu-img's messages.</summary>
public sealed record Qcow2CreateOptions
{
    public static readonly string[] Names =
    {
        "size", "compat", "backing_file", "backing_fmt", "encryption", "cluster_size", "preallocation",
        "lazy_refcounts", "refcount_bits", "compression_type", "extended_l2", "data_file", "data_file_raw",
    };

    public long Size { get; init; }
    public int Version { get; init; } = 3;
    public int ClusterSize { get; init; } = 65536;
    public int RefcountBits { get; init; } = 16;
    public string? BackingFile { get; init; }
    public string? BackingFormat { get; init; }
    public string Preallocation { get; init; } = "off";
    public bool LazyRefcounts { get; init; }
    public bool ExtendedL2 { get; init; }
    /// <summary>0 = zlib (deflate), 1 = zstd.</summary>
    public byte CompressionType { get; init; }

    public static Qcow2CreateOptions Parse(ImageCreateOptions options, string path)
    {
        DiskImageException Bad(string problem) => new(DiskImageErrorKind.InvalidArgument, path, problem);
        foreach (var key in options.Options.Keys)
            if (!Names.Contains(key)) throw Bad($"Invalid parameter '{key}'");
        foreach (var key in new[] { "encryption", "data_file", "data_file_raw" })
            if (options.Get(key) is { } v && v != "off" && v != "")
                throw new DiskImageException(DiskImageErrorKind.UnsupportedFeature, path, $"Option '{key}' is not supported");

        int version = options.Get("compat") switch
        {
            null or "1.1" or "v3" => 3,
            "0.10" or "v2" => 2,
            var other => throw Bad($"Invalid compatibility level: '{other}'"),
        };
        long clusterSize = options.Get("cluster_size") is { } cs ? ParseSize(cs, "cluster_size", path) : 65536;
        if (clusterSize < 512 || clusterSize > 2 << 20 || (clusterSize & (clusterSize - 1)) != 0)
            throw Bad("Cluster size must be a power of two between 512 and 2048k");
        long refcountBits = options.Get("refcount_bits") is { } rb ? ParseSize(rb, "refcount_bits", path) : 16;
        if (refcountBits < 1 || refcountBits > 64 || (refcountBits & (refcountBits - 1)) != 0)
            throw Bad("Refcount width must be a power of two and may not exceed 64 bits");
        bool lazy = ParseBool(options.Get("lazy_refcounts"), "lazy_refcounts", path);
        bool extended = ParseBool(options.Get("extended_l2"), "extended_l2", path);
        byte compression = options.Get("compression_type") switch
        {
            null or "zlib" => 0,
            "zstd" => 1,
            var other => throw Bad($"Parameter 'compression_type' does not accept value '{other}'"),
        };
        string prealloc = options.Get("preallocation") ?? "off";
        if (prealloc is not ("off" or "metadata" or "falloc" or "full"))
            throw Bad($"Parameter 'preallocation' does not accept value '{prealloc}'");
        string? backing = options.Get("backing_file");
        string? backingFmt = options.Get("backing_fmt");
        if (backing == "") backing = null;

        if (version < 3)
        {
            if (refcountBits != 16) throw Bad("Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)");
            if (lazy) throw Bad("Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)");
            if (compression != 0) throw Bad("Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)");
            if (extended) throw Bad("Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)");
        }
        if (extended && clusterSize < 16384) throw Bad("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
        if (backingFmt is not null && backing is null) throw Bad("Backing format cannot be used without backing file");
        if (backing is not null && prealloc != "off" && !extended)
            throw Bad("Backing file and preallocation can only be used at the same time if extended_l2 is on");
        if (backing is not null && backing.Length > Qcow2.OnDisk.Qcow2Header.MaxBackingFileNameLength)
            throw Bad("Backing file name too long");

        long size = options.Size;
        if (options.Get("size") is { } sz) size = ParseSize(sz, "size", path);
        if (size < 0) throw Bad("Image size must not be negative");
        return new Qcow2CreateOptions
        {
            Size = size, Version = version, ClusterSize = (int)clusterSize, RefcountBits = (int)refcountBits,
            BackingFile = backing, BackingFormat = backingFmt, Preallocation = prealloc, LazyRefcounts = lazy,
            ExtendedL2 = extended, CompressionType = compression,
        };
    }

    internal static bool ParseBool(string? value, string name, string path) => value switch
    {
        null or "off" or "false" or "no" => false,
        "on" or "true" or "yes" => true,
        _ => throw new DiskImageException(DiskImageErrorKind.InvalidArgument, path, $"Parameter '{name}' expects 'on' or 'off'"),
    };

    /// <summary>A size with qemu's optional suffix (k, M, G, T, P, E; 1024-based).</summary>
    public static long ParseSize(string text, string name, string path)
    {
        if (SizeParser.TryParse(text, out long value)) return value;
        throw new DiskImageException(DiskImageErrorKind.InvalidArgument, path,
            $"Parameter '{name}' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.");
    }
}
