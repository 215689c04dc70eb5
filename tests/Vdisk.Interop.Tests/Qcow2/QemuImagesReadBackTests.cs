using Vdisk.Images;
using Xunit;

namespace Vdisk.Interop.Tests.Qcow2;

/// <summary>A backing layer below the image under test: its format, create options and size.</summary>
public sealed record Layer(string Format, string Options = "", long Size = 8L << 20);

/// <summary>
/// An image qemu-img creates and qemu-io fills, on top of zero or more backing layers (each filled too).
/// <see cref="StripBackingFormat"/> removes the backing format so that it has to be probed.
/// <see cref="CompressedClusters"/> clusters are written compressed first, before the random commands.
/// </summary>
public sealed record ReadBackCase(string Options, long Size = 8L << 20, Layer[]? Backing = null,
    bool StripBackingFormat = false, int CompressedClusters = 0, int Commands = 60)
{
    public int ClusterSize => Options.Split(',').Select(o => o.Split('=')).Where(p => p[0] == "cluster_size")
        .Select(p => (int)Qemu.ParseSize(p[1])).DefaultIfEmpty(65536).First();
}

/// <summary>
/// Images made by qemu-img and qemu-io with every create option read back through Vdisk exactly as
/// `qemu-img convert -O raw` reads them, and Vdisk's block status agrees with `qemu-img map`.
/// </summary>
public class QemuImagesReadBackTests
{
    private static readonly Layer Raw8M = new("raw");
    private static readonly Layer Qcow2Base = new("qcow2", "cluster_size=65536");

    public static readonly Dictionary<string, ReadBackCase> Cases = new()
    {
        ["compat=0.10"] = new("compat=0.10"),
        ["compat=1.1"] = new("compat=1.1"),
        ["compat=0.10,cluster=4k"] = new("compat=0.10,cluster_size=4096"),
        ["cluster=512"] = new("cluster_size=512", 4L << 20),
        ["cluster=4k"] = new("cluster_size=4096"),
        ["cluster=64k"] = new("cluster_size=65536"),
        ["cluster=2M"] = new("cluster_size=2M", 16L << 20, Commands: 30),
        ["refcount_bits=1"] = new("cluster_size=4096,refcount_bits=1"),
        ["refcount_bits=2"] = new("cluster_size=4096,refcount_bits=2"),
        ["refcount_bits=4"] = new("cluster_size=4096,refcount_bits=4"),
        ["refcount_bits=8"] = new("cluster_size=4096,refcount_bits=8"),
        ["refcount_bits=16"] = new("cluster_size=4096,refcount_bits=16"),
        ["refcount_bits=32"] = new("cluster_size=4096,refcount_bits=32"),
        ["refcount_bits=64"] = new("cluster_size=512,refcount_bits=64", 4L << 20),
        ["extended_l2,cluster=16k"] = new("extended_l2=on,cluster_size=16384"),
        ["extended_l2,cluster=64k"] = new("extended_l2=on,cluster_size=65536"),
        ["prealloc=off"] = new("preallocation=off"),
        ["prealloc=metadata"] = new("preallocation=metadata"),
        ["prealloc=metadata,cluster=4k"] = new("preallocation=metadata,cluster_size=4096"),
        ["prealloc=falloc"] = new("preallocation=falloc"),
        ["prealloc=full"] = new("preallocation=full"),
        ["prealloc=metadata,extended_l2"] = new("preallocation=metadata,extended_l2=on,cluster_size=32768"),
        ["lazy_refcounts"] = new("lazy_refcounts=on"),
        ["compression=zlib"] = new("compression_type=zlib,cluster_size=4096", CompressedClusters: 40),
        ["compression=zstd"] = new("compression_type=zstd,cluster_size=4096", CompressedClusters: 40),
        ["compression=zlib,extended_l2"] = new("compression_type=zlib,extended_l2=on,cluster_size=16384", CompressedClusters: 20),
        ["compression=zlib,compat=0.10"] = new("compat=0.10,cluster_size=65536", CompressedClusters: 20),
        ["backing=raw"] = new("cluster_size=65536", Backing: [Raw8M]),
        ["backing=raw,no fmt"] = new("cluster_size=65536", Backing: [Raw8M], StripBackingFormat: true),
        ["backing=qcow2"] = new("cluster_size=4096", Backing: [Qcow2Base]),
        ["backing=qcow2,no fmt"] = new("cluster_size=4096", Backing: [Qcow2Base], StripBackingFormat: true),
        ["backing=qcow2,compat=0.10"] = new("compat=0.10,cluster_size=4096", Backing: [Qcow2Base]),
        ["backing=qcow2,extended_l2"] = new("extended_l2=on,cluster_size=65536", Backing: [Qcow2Base]),
        ["backing=raw smaller"] = new("cluster_size=65536", Backing: [new Layer("raw", Size: 3L << 20 | 12345)]),
        ["backing=qcow2 larger"] = new("cluster_size=65536", 4L << 20, Backing: [Qcow2Base]),
        ["depth2,raw smaller"] = new("cluster_size=65536", Backing: [new Layer("raw", Size: 3L << 20), new Layer("qcow2", "cluster_size=4096", 6L << 20)]),
        ["depth2=raw,qcow2"] = new("cluster_size=65536", Backing: [Raw8M, new Layer("qcow2", "cluster_size=4096")]),
        ["depth2=qcow2,qcow2"] = new("cluster_size=16384", Backing: [Qcow2Base, new Layer("qcow2", "compat=0.10,cluster_size=512")]),
        ["depth2,no fmt"] = new("cluster_size=65536", Backing: [Raw8M, Qcow2Base], StripBackingFormat: true),
        ["depth2,extended_l2"] = new("extended_l2=on,cluster_size=16384", Backing: [Qcow2Base, new Layer("qcow2", "extended_l2=on,cluster_size=32768")]),
    };

    public static IEnumerable<object[]> CaseNames() => Cases.Keys.Select(k => new object[] { k });

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void ReadsBackExactlyWhatQemuReads(string name)
    {
        using var dir = new TempDir();
        var path = Build(dir, name, Cases[name]);
        var expected = Qemu.ConvertToRaw(path, dir.File("expected.raw"));
        using var image = DiskImages.Open(path, new ImageOpenOptions { ReadOnly = true });
        Assert.Equal(expected.LongLength, image.Size);
        var all = new byte[image.Size];
        image.Read(0, all.AsMemory());
        Assert.True(expected.AsSpan().SequenceEqual(all), Qemu.FirstDifference(expected, all));

        // Small unaligned reads take other paths (mid-cluster starts, compressed cluster tails, backing ends).
        var rng = new Random(Qemu.StableSeed(name));
        for (int i = 0; i < 200; i++)
        {
            long off = rng.NextInt64(0, image.Size);
            int len = (int)Math.Min(image.Size - off, rng.Next(1, 3 * Cases[name].ClusterSize));
            var part = new byte[len];
            image.Read(off, part.AsSpan());
            Assert.True(expected.AsSpan((int)off, len).SequenceEqual(part), $"read {len} at 0x{off:x}: " + Qemu.FirstDifference(expected.AsSpan((int)off, len), part));
        }
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void BlockStatusAgreesWithQemuImgMap(string name)
    {
        using var dir = new TempDir();
        var path = Build(dir, name, Cases[name]);
        var expected = Qemu.Map(path);
        using var image = DiskImages.Open(path, new ImageOpenOptions { ReadOnly = true });
        var actual = Qemu.Map(image);
        Assert.True(expected.SequenceEqual(actual), $"qemu-img map:\n{Qemu.Describe(expected)}\nvdisk:\n{Qemu.Describe(actual)}");
    }

    /// <summary>The image and its backing chain, filled by qemu-io with commands seeded from the case name.</summary>
    internal static string Build(TempDir dir, string name, ReadBackCase c)
    {
        int seed = Qemu.StableSeed(name);
        string? below = null, belowFormat = null;
        var layers = c.Backing ?? [];
        for (int i = 0; i < layers.Length; i++)
        {
            var layer = layers[i];
            var file = dir.File($"base{i}.{layer.Format}");
            Create(file, layer.Format, layer.Options, layer.Size, below, belowFormat);
            Qemu.Io(file, layer.Format, Qemu.RandomCommands(seed + 1000 * (i + 1), layer.Size, 65536, 40));
            (below, belowFormat) = (Path.GetFileName(file), layer.Format);
        }
        var path = dir.File("top.qcow2");
        Create(path, "qcow2", c.Options, c.Size, below, belowFormat);
        var commands = new List<string>();
        var rng = new Random(seed);
        long clusters = c.Size / c.ClusterSize;
        foreach (long cluster in Enumerable.Range(0, c.CompressedClusters).Select(_ => rng.NextInt64(clusters)).Distinct())
            commands.Add($"write -q -c -P 0x{rng.Next(1, 256):x2} {cluster * c.ClusterSize} {c.ClusterSize}");
        commands.AddRange(Qemu.RandomCommands(seed, c.Size, c.ClusterSize, c.Commands));
        Qemu.Io(path, "qcow2", commands);
        if (c.StripBackingFormat)
        {
            Qemu.StripBackingFormat(path);
            var info = Qemu.MustRun("qemu-img", "info", path).StdOut;
            Assert.DoesNotContain("backing file format", info);
        }
        return path;
    }

    private static void Create(string path, string format, string options, long size, string? backing, string? backingFormat)
    {
        var args = new List<string> { "create", "-q", "-f", format };
        if (options.Length > 0) args.AddRange(["-o", options]);
        if (backing is not null) args.AddRange(["-b", backing, "-F", backingFormat!]);
        args.AddRange([path, size.ToString()]);
        Qemu.MustRun("qemu-img", args.ToArray());
    }

    /// <summary>`qemu-img convert -c` with either compression type, from a raw file of mixed content.</summary>
    [Theory]
    [InlineData("zlib", 65536)]
    [InlineData("zstd", 65536)]
    [InlineData("zlib", 4096)]
    [InlineData("zstd", 2 << 20)]
    public void CompressedConvertReadsBackAndMapsLikeQemu(string compression, int clusterSize)
    {
        using var dir = new TempDir();
        var source = dir.File("source.raw");
        var content = MixedContent(Qemu.StableSeed(compression + clusterSize), 6L << 20);
        File.WriteAllBytes(source, content);
        var path = dir.File("compressed.qcow2");
        Qemu.MustRun("qemu-img", "convert", "-c", "-O", "qcow2", "-o", $"compression_type={compression},cluster_size={clusterSize}", source, path);
        Assert.Contains($"compression type: {compression}", Qemu.MustRun("qemu-img", "info", path).StdOut);

        using var image = DiskImages.Open(path, new ImageOpenOptions { ReadOnly = true });
        var all = new byte[image.Size];
        image.Read(0, all.AsMemory());
        Assert.True(content.AsSpan().SequenceEqual(all), $"compression={compression} " + Qemu.FirstDifference(content, all));
        int compressedRuns = 0;
        for (long off = 0; off < image.Size;)
        {
            var s = image.GetBlockStatus(off, image.Size - off);
            if (s.Compressed) compressedRuns++;
            off += s.Length;
        }
        Assert.True(compressedRuns > 0, "qemu-img convert -c produced no compressed cluster that Vdisk recognises");
        var expected = Qemu.Map(path);
        var actual = Qemu.Map(image);
        Assert.True(expected.SequenceEqual(actual), $"qemu-img map:\n{Qemu.Describe(expected)}\nvdisk:\n{Qemu.Describe(actual)}");
    }

    /// <summary>Random (incompressible) runs, zero runs, text and single-byte fills, in 4 KiB to 200 KiB pieces.</summary>
    private static byte[] MixedContent(int seed, long size)
    {
        var rng = new Random(seed);
        var data = new byte[size];
        var text = "The quick brown fox jumps over the lazy dog; qcow2 compressed clusters "u8.ToArray();
        for (int pos = 0; pos < data.Length;)
        {
            int n = Math.Min(data.Length - pos, rng.Next(4096, 200_000));
            var piece = data.AsSpan(pos, n);
            switch (rng.Next(4))
            {
                case 0: rng.NextBytes(piece); break;
                case 1: break;
                case 2: for (int i = 0; i < n; i++) piece[i] = text[(i + pos) % text.Length]; break;
                default: piece.Fill((byte)rng.Next(1, 256)); break;
            }
            pos += n;
        }
        return data;
    }
}
