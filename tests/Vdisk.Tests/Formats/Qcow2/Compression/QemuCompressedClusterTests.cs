using System.Buffers.Binary;
using System.Diagnostics;
using Vdisk.Formats.Qcow2.Compression;
using Xunit;

namespace Vdisk.Tests.Formats.Qcow2.Compression;

/// <summary>
/// Interop with qemu-img 7.2 in both directions. The qcow2 reading and writing here is a
/// test-only sketch, just enough to get at compressed clusters (one L1 entry, one L2 table).
/// </summary>
public sealed class QemuCompressedClusterTests : IDisposable
{
    private const ulong Compressed = 1UL << 62;
    private const ulong Copied = 1UL << 63;
    private const ulong OffsetMask = 0x00FFFFFFFFFFFE00;

    private readonly string _dir = Directory.CreateTempSubdirectory("vdisk-codec-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    public static TheoryData<Qcow2CompressionType, int> Cases()
    {
        var cases = new TheoryData<Qcow2CompressionType, int>();
        foreach (var type in new[] { Qcow2CompressionType.Zlib, Qcow2CompressionType.Zstd })
            foreach (var clusterBits in new[] { 9, 12, 16, 21 })
                cases.Add(type, clusterBits);
        return cases;
    }

    /// <summary>Zero, repetitive, random and half-random clusters in turn.</summary>
    private static byte[][] GuestClusters(int clusterBits)
    {
        string[] kinds = [ClusterPatterns.Zero, ClusterPatterns.Repetitive, ClusterPatterns.Random, ClusterPatterns.HalfRandom];
        var count = clusterBits >= 21 ? 8 : 32;
        return Enumerable.Range(0, count).Select(i => ClusterPatterns.Make(kinds[i % 4], 1 << clusterBits, seed: i + 1)).ToArray();
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void ClustersQemuCompressedDecode(Qcow2CompressionType type, int clusterBits)
    {
        var clusters = GuestClusters(clusterBits);
        var raw = Path.Combine(_dir, "guest.raw");
        var qcow2 = Path.Combine(_dir, "qemu.qcow2");
        File.WriteAllBytes(raw, clusters.SelectMany(c => c).ToArray());
        Qemu("convert", "-c", "-f", "raw", "-O", "qcow2", "-o", $"compression_type={type.ToString().ToLowerInvariant()},cluster_size={1 << clusterBits}", raw, qcow2);

        var image = File.ReadAllBytes(qcow2);
        Assert.Equal(clusterBits, (int)BinaryPrimitives.ReadUInt32BigEndian(image.AsSpan(20)));
        var headerLength = BinaryPrimitives.ReadUInt32BigEndian(image.AsSpan(100));
        Assert.Equal(type, headerLength > 104 ? (Qcow2CompressionType)image[104] : Qcow2CompressionType.Zlib);

        var clusterSize = 1 << clusterBits;
        var l2 = ReadL2(image, clusterBits);
        int compressed = 0, unaligned = 0;
        var back = new byte[clusterSize];
        for (var i = 0; i < clusters.Length; i++)
        {
            var entry = l2[i];
            if ((entry & Compressed) == 0)
            {
                var offset = (long)(entry & OffsetMask);
                // qemu-img convert leaves zero clusters unallocated and stores what does not compress.
                Assert.True(offset == 0 ? clusters[i].All(b => b == 0) : image.AsSpan((int)offset, clusterSize).SequenceEqual(clusters[i]), $"standard cluster {i}");
                continue;
            }
            var (start, length) = CompressedRange(entry, clusterBits);
            // QEMU writes the last compressed cluster's exact length, so the file may end inside
            // the final sector the descriptor counts; QEMU reads zeros there.
            var data = image.AsSpan((int)start, (int)Math.Min(length, image.Length - start));
            Assert.True(ClusterCodec.TryDecompress(type, data, back), $"compressed cluster {i} at {start}");
            Assert.Equal(clusters[i], back);
            AssertWeCompressAsQemuDoes(type, clusters[i], data);
            compressed++;
            if (start % 512 != 0)
                unaligned++;
        }
        // Repetitive and half-random clusters compress; zero ones are skipped, random ones stored.
        Assert.Equal(clusters.Length / 2, compressed);
        // QEMU packs compressed clusters back to back, so most inputs carried the next one's start.
        Assert.True(unaligned > 0);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void ClustersWeCompressAreReadByQemu(Qcow2CompressionType type, int clusterBits)
    {
        var clusters = GuestClusters(clusterBits);
        var qcow2 = Path.Combine(_dir, "ours.qcow2");
        var out_raw = Path.Combine(_dir, "back.raw");
        var compressed = WriteImage(qcow2, type, clusterBits, clusters);
        // Zero clusters compress too here (nothing skips them); random ones are stored.
        Assert.Equal(clusters.Length * 3 / 4, compressed);

        var check = Qemu("check", "-f", "qcow2", qcow2);
        Assert.Contains("No errors were found", check);
        Qemu("convert", "-f", "qcow2", "-O", "raw", qcow2, out_raw);
        Assert.True(File.ReadAllBytes(out_raw).AsSpan().SequenceEqual(clusters.SelectMany(c => c).ToArray()));
    }

    private static void AssertWeCompressAsQemuDoes(Qcow2CompressionType type, byte[] cluster, ReadOnlySpan<byte> qemuData)
    {
        var ours = new byte[cluster.Length];
        var n = ClusterCodec.Compress(type, cluster, ours);
        Assert.True(n > 0 && n <= qemuData.Length);
        if (type == Qcow2CompressionType.Zlib)
        {
            // qemu-img links the same system libz, so identical parameters give identical bytes.
            Assert.True(qemuData[..n].SequenceEqual(ours.AsSpan(0, n)), "zlib stream differs from QEMU's");
        }
        else
        {
            // The frame header descriptor (content size, single segment, no checksum) must match;
            // the blocks may legitimately differ between libzstd versions.
            Assert.Equal(qemuData[4], ours[4]);
        }
    }

    private static ulong[] ReadL2(byte[] image, int clusterBits)
    {
        var l1Offset = (long)BinaryPrimitives.ReadUInt64BigEndian(image.AsSpan(40));
        var l2Offset = (long)(BinaryPrimitives.ReadUInt64BigEndian(image.AsSpan((int)l1Offset)) & OffsetMask);
        Assert.NotEqual(0, l2Offset);
        var entries = (1 << clusterBits) / 8;
        return Enumerable.Range(0, entries).Select(i => BinaryPrimitives.ReadUInt64BigEndian(image.AsSpan((int)l2Offset + 8 * i))).ToArray();
    }

    /// <summary>The host bytes a compressed descriptor names: from its offset to the end of its last sector.</summary>
    private static (long Start, long Length) CompressedRange(ulong entry, int clusterBits)
    {
        var x = 62 - (clusterBits - 8);
        var start = (long)(entry & ((1UL << x) - 1));
        var sectors = (long)((entry >> x) & ((1UL << (clusterBits - 8)) - 1)) + 1;
        return (start, (start & ~511L) + sectors * 512 - start);
    }

    /// <summary>
    /// Writes a v3 image: header, refcount table, one refcount block, L1, L2, then the clusters,
    /// compressed ones packed byte by byte as QEMU does. Returns how many were compressed.
    /// </summary>
    private static int WriteImage(string path, Qcow2CompressionType type, int clusterBits, byte[][] clusters)
    {
        var clusterSize = 1 << clusterBits;
        Assert.True(clusters.Length <= clusterSize / 8);
        const long refTable = 1, refBlock = 2, l1 = 3, l2 = 4, firstData = 5;
        var image = new MemoryStream();
        var refcounts = new ushort[clusterSize / 2];
        for (var c = 0; c < firstData; c++)
            refcounts[c] = 1;

        var pos = firstData * clusterSize;
        var end = pos;
        var compressedCount = 0;
        var buffer = new byte[clusterSize];
        var x = 62 - (clusterBits - 8);
        for (var i = 0; i < clusters.Length; i++)
        {
            var n = ClusterCodec.Compress(type, clusters[i], buffer);
            ulong entry;
            if (n > 0)
            {
                var sectors = (pos + n - 1) / 512 - pos / 512 + 1;
                entry = Compressed | (ulong)(sectors - 1) << x | (ulong)pos;
                Write(image, pos, buffer.AsSpan(0, n));
                var first = pos & ~511L;
                for (var c = first / clusterSize; c <= (first + sectors * 512 - 1) / clusterSize; c++)
                    refcounts[c]++;
                end = Math.Max(end, first + sectors * 512);
                pos += n;
                compressedCount++;
            }
            else
            {
                pos = AlignUp(pos, clusterSize);
                entry = (ulong)pos | Copied;
                Write(image, pos, clusters[i]);
                refcounts[pos / clusterSize]++;
                pos += clusterSize;
                end = Math.Max(end, pos);
            }
            Write(image, l2 * clusterSize + 8 * i, BigEndian(entry));
        }

        var header = new byte[112];
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(0), 0x514649FB);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(4), 3);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(20), (uint)clusterBits);
        BinaryPrimitives.WriteUInt64BigEndian(header.AsSpan(24), (ulong)clusters.Length * (ulong)clusterSize);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(36), 1);
        BinaryPrimitives.WriteUInt64BigEndian(header.AsSpan(40), (ulong)(l1 * clusterSize));
        BinaryPrimitives.WriteUInt64BigEndian(header.AsSpan(48), (ulong)(refTable * clusterSize));
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(56), 1);
        // Incompatible feature bit 3 announces a compression type other than zlib.
        BinaryPrimitives.WriteUInt64BigEndian(header.AsSpan(72), type == Qcow2CompressionType.Zlib ? 0UL : 1UL << 3);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(96), 4);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(100), (uint)header.Length);
        header[104] = (byte)type;
        Write(image, 0, header);
        Write(image, refTable * clusterSize, BigEndian((ulong)(refBlock * clusterSize)));
        Write(image, l1 * clusterSize, BigEndian((ulong)(l2 * clusterSize) | Copied));
        for (var c = 0; c < refcounts.Length && c * (long)clusterSize < end; c++)
            Write(image, refBlock * clusterSize + 2 * c, [(byte)(refcounts[c] >> 8), (byte)refcounts[c]]);
        image.SetLength(AlignUp(end, clusterSize));
        File.WriteAllBytes(path, image.ToArray());
        return compressedCount;
    }

    private static long AlignUp(long value, long alignment) => (value + alignment - 1) / alignment * alignment;

    private static byte[] BigEndian(ulong value)
    {
        var bytes = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(bytes, value);
        return bytes;
    }

    private static void Write(MemoryStream image, long offset, ReadOnlySpan<byte> data)
    {
        image.Position = offset;
        image.Write(data);
    }

    private static string Qemu(params string[] args)
    {
        var psi = new ProcessStartInfo("qemu-img") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException("qemu-img did not start");
        var stderr = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(TimeSpan.FromMinutes(2)))
        {
            p.Kill();
            throw new TimeoutException($"qemu-img {string.Join(' ', args)}");
        }
        Assert.True(p.ExitCode == 0, $"qemu-img {string.Join(' ', args)}: exit {p.ExitCode}\n{stdout}\n{stderr.Result}");
        return stdout;
    }
}
