using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Interop.Tests.Qcow2;

/// <summary>One merged run of qemu-img map's view of an image (the host offset is left out on purpose).</summary>
public readonly record struct MapRun(long Start, long Length, bool Present, bool Zero, bool Data, int Depth)
{
    public override string ToString() => $"[{Start:x}+{Length:x} present={Present} zero={Zero} data={Data} depth={Depth}]";
}

public enum IoKind { Write, Zero, ZeroUnmap, Discard, Flush }

/// <summary>One guest operation, to run as a qemu-io command or through Vdisk's API.</summary>
public readonly record struct IoOp(IoKind Kind, long Offset, long Length, byte Pattern = 0)
{
    public string ToQemuIo() => Kind switch
    {
        IoKind.Write => $"write -q -P 0x{Pattern:x2} {Offset} {Length}",
        IoKind.Zero => $"write -q -z {Offset} {Length}",
        IoKind.ZeroUnmap => $"write -q -z -u {Offset} {Length}",
        IoKind.Discard => $"discard -q {Offset} {Length}",
        _ => "flush",
    };

    /// <summary>Applies the operation; <paramref name="async"/> picks the async API so both paths get exercised.</summary>
    public async Task ApplyAsync(DiskImage image, bool async)
    {
        switch (Kind)
        {
            case IoKind.Write:
                var data = new byte[Length];
                Array.Fill(data, Pattern);
                if (async) await image.WriteAsync(Offset, data); else image.Write(Offset, data.AsSpan());
                break;
            case IoKind.Zero or IoKind.ZeroUnmap:
                if (async) await image.WriteZeroesAsync(Offset, Length, Kind == IoKind.ZeroUnmap);
                else image.WriteZeroes(Offset, Length, Kind == IoKind.ZeroUnmap);
                break;
            case IoKind.Discard:
                if (async) await image.DiscardAsync(Offset, Length); else image.Discard(Offset, Length);
                break;
            default:
                if (async) await image.FlushAsync(); else image.Flush();
                break;
        }
    }
}

/// <summary>qemu-img / qemu-io driving and the Vdisk-side equivalents the interop tests compare against.</summary>
public static class Qemu
{
    public static ToolResult MustRun(string program, params string[] args)
    {
        var r = Tools.Run(program, args);
        Assert.True(r.ExitCode == 0, $"{program} {string.Join(' ', args)}\n{r}");
        return r;
    }

    /// <summary>Runs many qemu-io commands in one process (one process per command would dominate the runtime).</summary>
    public static void Io(string path, string format, IEnumerable<string> commands)
    {
        var args = new List<string> { "-f", format };
        foreach (var c in commands) { args.Add("-c"); args.Add(c); }
        args.Add(path);
        var r = Tools.RunWithTimeout("qemu-io", args, TimeSpan.FromMinutes(2));
        // qemu-io exits 0 even when a command fails; the failure text is the only signal.
        Assert.True(r.ExitCode == 0 && !r.StdErr.Contains("error", StringComparison.OrdinalIgnoreCase)
            && !r.StdOut.Contains("failed", StringComparison.OrdinalIgnoreCase), $"qemu-io on {path}\n{r}");
    }

    public static byte[] ConvertToRaw(string path, string rawPath)
    {
        MustRun("qemu-img", "convert", "-O", "raw", path, rawPath);
        return File.ReadAllBytes(rawPath);
    }

    /// <summary>qemu-img map --output=json, merged again without host offsets so only the guest view remains.</summary>
    public static List<MapRun> Map(string path)
    {
        var r = MustRun("qemu-img", "map", "--output=json", path);
        var runs = new List<MapRun>();
        using var doc = JsonDocument.Parse(r.StdOut);
        foreach (var e in doc.RootElement.EnumerateArray())
            Add(runs, new MapRun(e.GetProperty("start").GetInt64(), e.GetProperty("length").GetInt64(),
                e.GetProperty("present").GetBoolean(), e.GetProperty("zero").GetBoolean(),
                e.GetProperty("data").GetBoolean(), e.GetProperty("depth").GetInt32()));
        return runs;
    }

    /// <summary>Vdisk's block-status walk over the whole image, merged the same way.</summary>
    public static List<MapRun> Map(DiskImage image)
    {
        var runs = new List<MapRun>();
        for (long off = 0; off < image.Size;)
        {
            var s = image.GetBlockStatus(off, image.Size - off);
            Assert.True(s.Length > 0 && s.Offset == off, $"block status at {off} returned {s}");
            Add(runs, new MapRun(off, s.Length, s.Present, s.Zero, s.Data, s.Depth));
            off += s.Length;
        }
        return runs;
    }

    private static void Add(List<MapRun> runs, MapRun run)
    {
        if (runs.Count > 0 && runs[^1] is var last && last.Start + last.Length == run.Start
            && (last.Present, last.Zero, last.Data, last.Depth) == (run.Present, run.Zero, run.Data, run.Depth))
            runs[^1] = last with { Length = last.Length + run.Length };
        else runs.Add(run);
    }

    public static string Describe(IEnumerable<MapRun> runs) => string.Join("\n", runs);

    /// <summary>
    /// Removes the backing-format header extension by hand: qemu-img 7.2 refuses to create such an image,
    /// but older ones did and they are still opened (the backing format is then probed).
    /// </summary>
    public static void StripBackingFormat(string path)
    {
        var bytes = File.ReadAllBytes(path);
        uint version = BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(4));
        int pos = version == 2 ? 72 : (int)BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(100));
        ulong nameOffset = BinaryPrimitives.ReadUInt64BigEndian(bytes.AsSpan(8));
        uint nameSize = BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(16));
        while (true)
        {
            uint type = BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(pos));
            int length = (int)BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(pos + 4));
            Assert.NotEqual(0u, type); // the extension must be there to remove
            int padded = 8 + ((length + 7) & ~7);
            if (type == 0xE2792ACA)
            {
                int tail = (int)nameOffset + (int)nameSize;
                Array.Copy(bytes, pos + padded, bytes, pos, tail - pos - padded);
                Array.Clear(bytes, tail - padded, padded);
                BinaryPrimitives.WriteUInt64BigEndian(bytes.AsSpan(8), nameOffset - (ulong)padded);
                break;
            }
            pos += padded;
        }
        using var f = new FileStream(path, FileMode.Open, FileAccess.Write);
        f.Write(bytes, 0, (int)Math.Min(bytes.LongLength, (long)nameOffset + nameSize));
    }

    /// <summary>
    /// A seeded mix of guest operations: pattern writes (some inside one cluster, some across boundaries, some
    /// unaligned), zero writes with and without unmap, discards and (when asked) flushes, inside <paramref name="size"/>.
    /// </summary>
    public static List<IoOp> RandomOps(int seed, long size, int clusterSize, int count, bool flushes = false)
    {
        var rng = new Random(seed);
        var ops = new List<IoOp>();
        for (int i = 0; i < count; i++)
        {
            long cluster = rng.NextInt64(0, Math.Max(1, size / clusterSize));
            long off;
            long len;
            switch (rng.Next(4))
            {
                case 0: // inside one cluster, unaligned
                    off = cluster * clusterSize + rng.Next(clusterSize - 1);
                    len = rng.Next(1, (int)(cluster * clusterSize + clusterSize - off) + 1);
                    break;
                case 1: // across a boundary
                    off = cluster * clusterSize + clusterSize - rng.Next(1, Math.Min(clusterSize, 8192));
                    len = rng.Next(2, 3 * Math.Min(clusterSize, 65536));
                    break;
                case 2: // whole clusters
                    off = cluster * clusterSize;
                    len = clusterSize * (long)rng.Next(1, 5);
                    break;
                default: // sector aligned, any length
                    off = rng.NextInt64(0, size / 512) * 512;
                    len = rng.Next(1, 256) * 512L;
                    break;
            }
            off = Math.Min(off, size - 1);
            len = Math.Max(1, Math.Min(len, size - off));
            int kind = rng.Next(flushes ? 11 : 10);
            ops.Add(kind switch
            {
                < 5 => new IoOp(IoKind.Write, off, len, (byte)rng.Next(1, 256)),
                5 => new IoOp(IoKind.Zero, off, len),
                6 => new IoOp(IoKind.ZeroUnmap, off, len),
                10 => new IoOp(IoKind.Flush, 0, 0),
                _ => new IoOp(IoKind.Discard, off, len),
            });
        }
        return ops;
    }

    public static List<string> RandomCommands(int seed, long size, int clusterSize, int count) =>
        RandomOps(seed, size, clusterSize, count).Select(o => o.ToQemuIo()).ToList();

    /// <summary>A seed that is the same in every run (string.GetHashCode is randomized per process).</summary>
    public static int StableSeed(string text)
    {
        uint h = 2166136261;
        foreach (char ch in text) h = (h ^ ch) * 16777619;
        return (int)(h & 0x7fffffff);
    }

    public static long ParseSize(string text) =>
        SizeParser.TryParse(text, out long v) ? v : throw new ArgumentException($"bad size {text}");

    public static string FirstDifference(ReadOnlySpan<byte> expected, ReadOnlySpan<byte> actual)
    {
        if (expected.Length != actual.Length) return $"lengths differ: {expected.Length} vs {actual.Length}";
        int i = expected.CommonPrefixLength(actual);
        if (i == expected.Length) return "identical";
        var sb = new StringBuilder($"first difference at 0x{i:x}: expected 0x{expected[i]:x2}, got 0x{actual[i]:x2}");
        int end = i;
        while (end < expected.Length && expected[end] != actual[end]) end++;
        return sb.Append($", differing run ends at 0x{end:x}").ToString();
    }
}
