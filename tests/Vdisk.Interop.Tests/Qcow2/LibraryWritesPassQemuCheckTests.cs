using Vdisk.Images;
using Xunit;

namespace Vdisk.Interop.Tests.Qcow2;

/// <summary>Images written through the library pass qemu-img check and hold exactly what a raw shadow copy holds.</summary>
public class LibraryWritesPassQemuCheckTests
{
    public static IEnumerable<object[]> Variants() => new[]
    {
        new object[] { "cluster_size=65536", false },
        new object[] { "cluster_size=4096", false },
        new object[] { "cluster_size=512,refcount_bits=1", false },
        new object[] { "compat=0.10,cluster_size=4096", false },
        new object[] { "cluster_size=65536,refcount_bits=64", true },
        new object[] { "extended_l2=on,cluster_size=32768", false },
        new object[] { "extended_l2=on,cluster_size=65536", true },
        new object[] { "compat=0.10", true },
        new object[] { "lazy_refcounts=on,cluster_size=4096", false },
        new object[] { "lazy_refcounts=on", true },
    };

    [Theory]
    [MemberData(nameof(Variants))]
    public async Task RandomWritesZeroesAndDiscardsMatchShadowAndCheckClean(string options, bool withBacking)
    {
        using var dir = new TempDir();
        const long size = 8L << 20;
        var rng = new Random(options.GetHashCode() ^ (withBacking ? 1 : 0));
        var shadow = new byte[size];
        var opts = options.Split(',').Select(p => p.Split('=')).ToDictionary(p => p[0], p => p[1]);
        if (withBacking)
        {
            var basePath = dir.File("base.qcow2");
            Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "qcow2", basePath, size.ToString()).ExitCode);
            var fill = new byte[size];
            rng.NextBytes(fill);
            using (var b = DiskImages.Open(basePath))
            {
                for (long off = 0; off < size; off += 1 << 20)
                    if (rng.Next(3) > 0) { b.Write(off, fill.AsMemory((int)off, 1 << 20)); Array.Copy(fill, off, shadow, off, 1 << 20); }
            }
            opts["backing_file"] = "base.qcow2";
            opts["backing_fmt"] = "qcow2";
        }
        var path = dir.File("top.qcow2");
        DiskImages.Create(path, "qcow2", new ImageCreateOptions { Size = size, Options = opts });
        await using (var image = DiskImages.Open(path))
        {
            for (int op = 0; op < 300; op++)
            {
                long off = rng.NextInt64(0, size - 1);
                int len = (int)Math.Min(size - off, rng.Next(1, 200_000));
                switch (rng.Next(10))
                {
                    case < 6:
                        var data = new byte[len];
                        rng.NextBytes(data);
                        if (rng.Next(2) == 0) image.Write(off, data.AsSpan()); else await image.WriteAsync(off, data);
                        Array.Copy(data, 0, shadow, off, len);
                        break;
                    case 6 or 7:
                        bool unmap = rng.Next(2) == 0;
                        if (rng.Next(2) == 0) image.WriteZeroes(off, len, unmap); else await image.WriteZeroesAsync(off, len, unmap);
                        Array.Clear(shadow, (int)off, len);
                        break;
                    case 8:
                        // Discard leaves content undefined in general; read it back to learn what it became.
                        image.Discard(off, len);
                        image.Read(off, shadow.AsSpan((int)off, len));
                        break;
                    default:
                        await image.FlushAsync();
                        break;
                }
                if (op % 50 == 0)
                {
                    var back = new byte[len];
                    image.Read(off, back.AsSpan());
                    Assert.Equal(shadow.AsSpan((int)off, len).ToArray(), back);
                }
            }
            var all = new byte[size];
            await image.ReadAsync(0, all);
            Assert.True(shadow.AsSpan().SequenceEqual(all), "library read-back differs from the shadow copy");
        }
        var check = Tools.Run("qemu-img", "check", path);
        Assert.True(check.ExitCode == 0, check.ToString());
        var raw = dir.File("shadow.raw");
        await File.WriteAllBytesAsync(raw, shadow);
        var cmp = Tools.Run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, path);
        Assert.True(cmp.ExitCode == 0, cmp.ToString());
    }
}
