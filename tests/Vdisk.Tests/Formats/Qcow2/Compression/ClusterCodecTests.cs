using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Text;
using Vdisk.Formats.Qcow2.Compression;
using Xunit;
using static Vdisk.Formats.Qcow2.Compression.ZlibNative;

namespace Vdisk.Tests.Formats.Qcow2.Compression;

internal static class ClusterPatterns
{
    public const string Zero = "zero";
    public const string Random = "random";
    public const string Repetitive = "repetitive";
    public const string HalfRandom = "half-random";

    public static byte[] Make(string kind, int size, int seed = 1)
    {
        var data = new byte[size];
        switch (kind)
        {
            case Zero:
                break;
            case Random:
                new Random(seed).NextBytes(data);
                break;
            case HalfRandom:
                new Random(seed).NextBytes(data.AsSpan(0, size / 2));
                break;
            case Repetitive:
                for (int i = 0, line = seed; i < size; line++)
                {
                    var text = Encoding.ASCII.GetBytes($"line {line % 97:D4} of a repetitive cluster pattern, seed {seed}\n");
                    var n = Math.Min(text.Length, size - i);
                    text.AsSpan(0, n).CopyTo(data.AsSpan(i));
                    i += n;
                }
                break;
            default:
                throw new ArgumentException(kind);
        }
        return data;
    }
}

/// <summary>Test-side zlib inflate with QEMU's parameters (raw deflate, 4 KiB window).</summary>
internal static unsafe partial class QemuInflate
{
    private const int Z_NO_FLUSH = 0;

    [LibraryImport(Library)]
    private static partial int inflateInit2_(ZStream* strm, int windowBits, byte* version, int streamSize);

    [LibraryImport(Library)]
    private static partial int inflate(ZStream* strm, int flush);

    [LibraryImport(Library)]
    private static partial int inflateEnd(ZStream* strm);

    /// <summary>Returns the inflated bytes, or the zlib error (e.g. "invalid distance too far back").</summary>
    /// <remarks>
    /// zlib checks distances against its window only for history from earlier inflate calls: one
    /// call into a whole-cluster buffer, as QEMU 7.2 makes, accepts any distance back to the start of
    /// the cluster. Handing out one output byte per call makes every distance go through the window.
    /// </remarks>
    public static (byte[]? Data, string? Error) Inflate(ReadOnlySpan<byte> compressed, int outputLength, int windowBits = -12, int outputChunk = 1)
    {
        var output = new byte[outputLength];
        ZStream strm = default;
        var rc = inflateInit2_(&strm, windowBits, zlibVersion(), sizeof(ZStream));
        Assert.Equal(Z_OK, rc);
        try
        {
            fixed (byte* src = compressed)
            fixed (byte* dst = output)
            {
                strm.NextIn = src;
                strm.AvailIn = (uint)compressed.Length;
                var produced = 0;
                do
                {
                    strm.NextOut = dst + produced;
                    strm.AvailOut = (uint)Math.Min(outputChunk, outputLength - produced);
                    rc = inflate(&strm, Z_NO_FLUSH);
                    produced = (int)(strm.NextOut - dst);
                }
                while (rc == Z_OK && produced < outputLength);
                if (rc == Z_OK)
                    rc = inflate(&strm, Z_FINISH);
                if (rc != Z_STREAM_END)
                    return (null, $"inflate returned {rc}: {Message(&strm)}");
                if (produced != outputLength)
                    return (null, $"inflate produced {produced} bytes, expected {outputLength}");
                return (output, null);
            }
        }
        finally
        {
            inflateEnd(&strm);
        }
    }
}

public class ClusterCodecTests
{
    public static TheoryData<Qcow2CompressionType, int, string> RoundTripCases()
    {
        var cases = new TheoryData<Qcow2CompressionType, int, string>();
        foreach (var type in new[] { Qcow2CompressionType.Zlib, Qcow2CompressionType.Zstd })
            foreach (var size in new[] { 512, 4096, 65536, 2 << 20 })
                foreach (var kind in new[] { ClusterPatterns.Zero, ClusterPatterns.Random, ClusterPatterns.Repetitive, ClusterPatterns.HalfRandom })
                    cases.Add(type, size, kind);
        return cases;
    }

    [Theory]
    [MemberData(nameof(RoundTripCases))]
    public void RoundTrip(Qcow2CompressionType type, int size, string kind)
    {
        var cluster = ClusterPatterns.Make(kind, size);
        var compressed = new byte[size];
        var n = ClusterCodec.Compress(type, cluster, compressed);

        if (kind == ClusterPatterns.Random)
        {
            // Incompressible: the caller must fall back to an uncompressed cluster.
            Assert.Equal(-1, n);
            // With room to spare the codec still produces a stream that decodes.
            compressed = new byte[size * 2 + 1024];
            n = ClusterCodec.Compress(type, cluster, compressed);
        }
        Assert.InRange(n, 1, compressed.Length - 1);

        var back = new byte[size];
        Assert.True(ClusterCodec.TryDecompress(type, compressed.AsSpan(0, n), back));
        Assert.Equal(cluster, back);
    }

    [Theory]
    [InlineData(Qcow2CompressionType.Zlib)]
    [InlineData(Qcow2CompressionType.Zstd)]
    public void ResultMustBeStrictlySmallerThanDestination(Qcow2CompressionType type)
    {
        var cluster = ClusterPatterns.Make(ClusterPatterns.Repetitive, 65536);
        var n = ClusterCodec.Compress(type, cluster, new byte[65536]);
        Assert.True(n > 0);
        Assert.Equal(-1, ClusterCodec.Compress(type, cluster, new byte[n]));
        Assert.Equal(-1, ClusterCodec.Compress(type, cluster, new byte[n - 1]));
        // zlib's output does not depend on the room it has; zstd's entropy stage wants some slack
        // and may give up just short of an exact fit, which only costs a stored cluster.
        for (var room = n + 1; room < n + 64; room++)
        {
            var m = ClusterCodec.Compress(type, cluster, new byte[room]);
            Assert.True(m == n || (type == Qcow2CompressionType.Zstd && m == -1), $"{m} bytes in room for {room}");
        }
        Assert.Equal(n, ClusterCodec.Compress(type, cluster, new byte[n + 1024]));
        if (type == Qcow2CompressionType.Zlib)
            Assert.Equal(n, ClusterCodec.Compress(type, cluster, new byte[n + 1]));
        Assert.Equal(-1, ClusterCodec.Compress(type, cluster, Span<byte>.Empty));
        Assert.Equal(-1, ClusterCodec.Compress(type, cluster, new byte[1]));
    }

    public static TheoryData<Qcow2CompressionType, string> TrailerCases()
    {
        var cases = new TheoryData<Qcow2CompressionType, string>();
        foreach (var type in new[] { Qcow2CompressionType.Zlib, Qcow2CompressionType.Zstd })
            foreach (var trailer in new[] { "sector-zeros", "garbage", "next-cluster" })
                cases.Add(type, trailer);
        return cases;
    }

    [Theory]
    [MemberData(nameof(TrailerCases))]
    public void DecompressionIgnoresWhatFollowsTheStream(Qcow2CompressionType type, string trailer)
    {
        const int size = 65536;
        var cluster = ClusterPatterns.Make(ClusterPatterns.HalfRandom, size, seed: 7);
        var compressed = new byte[size];
        var n = ClusterCodec.Compress(type, cluster, compressed);
        Assert.True(n > 0);

        byte[] tail;
        switch (trailer)
        {
            case "sector-zeros":
                // What a qcow2 reader hands over: up to the end of the last sector, plus one more.
                tail = new byte[(512 - n % 512) % 512 + 512];
                break;
            case "garbage":
                tail = new byte[3000];
                new Random(3).NextBytes(tail);
                break;
            default:
                var next = new byte[size];
                var m = ClusterCodec.Compress(type, ClusterPatterns.Make(ClusterPatterns.Repetitive, size, seed: 9), next);
                tail = next[..m];
                break;
        }
        var input = compressed[..n].Concat(tail).ToArray();

        var back = new byte[size];
        Assert.True(ClusterCodec.TryDecompress(type, input, back));
        Assert.Equal(cluster, back);
    }

    [Theory]
    [InlineData(Qcow2CompressionType.Zlib)]
    [InlineData(Qcow2CompressionType.Zstd)]
    public void ShortStreamIsRejected(Qcow2CompressionType type)
    {
        var cluster = ClusterPatterns.Make(ClusterPatterns.Repetitive, 4096);
        var compressed = new byte[4096];
        var n = ClusterCodec.Compress(type, cluster, compressed);
        // Decodes fine but yields half of what the caller's cluster needs, padding or not.
        Assert.False(ClusterCodec.TryDecompress(type, compressed.AsSpan(0, n), new byte[8192]));
        Assert.False(ClusterCodec.TryDecompress(type, compressed.AsSpan(0, n + 512), new byte[8192]));
    }

    [Fact]
    public void LongerStreamIsCutOffForZlibButRejectedForZstdAsInQemu()
    {
        var cluster = ClusterPatterns.Make(ClusterPatterns.Repetitive, 8192);
        var zlib = new byte[8192];
        var n = ClusterCodec.Compress(Qcow2CompressionType.Zlib, cluster, zlib);
        var back = new byte[4096];
        Assert.True(ClusterCodec.TryDecompress(Qcow2CompressionType.Zlib, zlib.AsSpan(0, n), back));
        Assert.Equal(cluster[..4096], back);

        var zstd = new byte[8192];
        n = ClusterCodec.Compress(Qcow2CompressionType.Zstd, cluster, zstd);
        Assert.False(ClusterCodec.TryDecompress(Qcow2CompressionType.Zstd, zstd.AsSpan(0, n), back));
    }

    [Theory]
    [InlineData(Qcow2CompressionType.Zlib)]
    [InlineData(Qcow2CompressionType.Zstd)]
    public void EveryTruncationIsRejected(Qcow2CompressionType type)
    {
        var cluster = ClusterPatterns.Make(ClusterPatterns.HalfRandom, 4096, seed: 5);
        var compressed = new byte[4096];
        var n = ClusterCodec.Compress(type, cluster, compressed);
        var back = new byte[4096];
        var accepted = 0;
        for (var len = 0; len < n; len++)
        {
            if (!ClusterCodec.TryDecompress(type, compressed.AsSpan(0, len), back))
                continue;
            // Deflate may lose only its end-of-block code and still fill the cluster, which QEMU
            // accepts as well; zstd must see the whole frame.
            Assert.Equal(Qcow2CompressionType.Zlib, type);
            Assert.Equal(cluster, back);
            accepted++;
        }
        Assert.InRange(accepted, 0, 2);
    }

    [Theory]
    [InlineData(Qcow2CompressionType.Zlib)]
    [InlineData(Qcow2CompressionType.Zstd)]
    public void GarbageAndCorruptionNeverThrow(Qcow2CompressionType type)
    {
        var rng = new Random(11);
        var back = new byte[65536];
        var accepted = 0;
        for (var i = 0; i < 300; i++)
        {
            var garbage = new byte[rng.Next(1, 4096)];
            rng.NextBytes(garbage);
            if (ClusterCodec.TryDecompress(type, garbage, back))
                accepted++;
        }
        // Random bytes are occasionally valid deflate, but never enough of it to fill 64 KiB.
        Assert.Equal(0, accepted);
        Assert.False(ClusterCodec.TryDecompress(type, new byte[4096], back));
        Assert.False(ClusterCodec.TryDecompress(type, ReadOnlySpan<byte>.Empty, back));

        var cluster = ClusterPatterns.Make(ClusterPatterns.Repetitive, 65536);
        var compressed = new byte[65536];
        var n = ClusterCodec.Compress(type, cluster, compressed);
        for (var i = 0; i < 2000; i++)
        {
            var corrupt = compressed[..n];
            corrupt[rng.Next(n)] ^= (byte)(1 << rng.Next(8));
            // Any outcome but an exception is fine: a flipped literal bit can still decode.
            ClusterCodec.TryDecompress(type, corrupt, back);
        }
    }

    [Fact]
    public void ZstdFrameDeclaringAHugeWindowIsRejected()
    {
        // Frame header without content size whose window descriptor asks for 2^31 bytes, then a
        // last raw block of 16 bytes: beyond libzstd's default window limit, so QEMU rejects it too.
        byte[] frame = [0x28, 0xB5, 0x2F, 0xFD, 0x00, 0xA8, 0x81, 0x00, 0x00, .. new byte[16]];
        Assert.False(ClusterCodec.TryDecompress(Qcow2CompressionType.Zstd, frame, new byte[16]));
    }

    [Fact]
    public void ZstdFrameDeclaringALargeWindowDecodesIntoTheClusterBuffer()
    {
        // 64 MiB window (exponent 16), no content size, one last raw block of 512 bytes: within the
        // format's limits, and decoded straight into the caller's buffer rather than a window buffer.
        var payload = ClusterPatterns.Make(ClusterPatterns.Random, 512);
        byte[] frame = [0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x80, 0x01 | (512 << 3) & 0xFF, (512 << 3) >> 8 & 0xFF, 0x00, .. payload, .. new byte[300]];
        var back = new byte[512];
        Assert.True(ClusterCodec.TryDecompress(Qcow2CompressionType.Zstd, frame, back));
        Assert.Equal(payload, back);
    }

    [Fact]
    public void ZstdUnwrapRejectsPaddingThatClusterCodecAccepts()
    {
        // Documents why the codec uses the streaming API (dotnet-ecosystem.md 3).
        var cluster = ClusterPatterns.Make(ClusterPatterns.Repetitive, 4096);
        var compressed = new byte[4096];
        var n = ClusterCodec.Compress(Qcow2CompressionType.Zstd, cluster, compressed);
        var padded = compressed.AsSpan(0, n + 100).ToArray();
        using var unwrapper = new ZstdSharp.Decompressor();
        Assert.ThrowsAny<Exception>(() => unwrapper.Unwrap(padded, new byte[4096]));
        Assert.True(ClusterCodec.TryDecompress(Qcow2CompressionType.Zstd, padded, new byte[4096]));
    }

    [Theory]
    [InlineData(4096)]
    [InlineData(65536)]
    [InlineData(2 << 20)]
    public void ZlibOutputStaysWithinAFourKiBWindow(int size)
    {
        // Repeats 8 KiB apart (beyond the window) and 1 KiB apart (within it).
        var cluster = new byte[size];
        var block = ClusterPatterns.Make(ClusterPatterns.Random, 8192, seed: 21);
        for (var i = 0; i < size; i += block.Length)
            block.AsSpan(0, Math.Min(block.Length, size - i)).CopyTo(cluster.AsSpan(i));
        for (var i = 0; i + 2048 <= size; i += 8192)
            cluster.AsSpan(i, 1024).CopyTo(cluster.AsSpan(i + 1024));

        var compressed = new byte[size];
        var n = ClusterCodec.Compress(Qcow2CompressionType.Zlib, cluster, compressed);
        Assert.True(n > 0);
        var (data, error) = QemuInflate.Inflate(compressed.AsSpan(0, n), size);
        Assert.Null(error);
        Assert.Equal(cluster, data);
    }

    [Fact]
    public void DeflateStreamOutputBreaksTheFourKiBWindowWhichIsWhyItIsNotUsedForWriting()
    {
        // Proves the check above can fail: .NET's encoder reaches 8 KiB back.
        var block = ClusterPatterns.Make(ClusterPatterns.Random, 8192, seed: 21);
        var cluster = block.Concat(block).Concat(block).Concat(block).ToArray();
        using var ms = new MemoryStream();
        using (var deflate = new DeflateStream(ms, CompressionLevel.Optimal, leaveOpen: true))
            deflate.Write(cluster);
        Assert.NotNull(QemuInflate.Inflate(ms.ToArray(), cluster.Length, windowBits: -15).Data);
        var (_, error) = QemuInflate.Inflate(ms.ToArray(), cluster.Length, windowBits: -12);
        Assert.Contains("too far back", error);
        // One call into the whole cluster, as QEMU 7.2 inflates, does not notice.
        Assert.NotNull(QemuInflate.Inflate(ms.ToArray(), cluster.Length, windowBits: -12, outputChunk: cluster.Length).Data);
    }

    [Fact]
    public void ConcurrentUseGivesIndependentResults()
    {
        var failures = 0;
        Parallel.For(0, 200, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
        {
            var type = i % 2 == 0 ? Qcow2CompressionType.Zlib : Qcow2CompressionType.Zstd;
            var size = i % 3 == 0 ? 65536 : 4096;
            var cluster = ClusterPatterns.Make(i % 4 == 0 ? ClusterPatterns.HalfRandom : ClusterPatterns.Repetitive, size, seed: i);
            var compressed = new byte[size];
            var n = ClusterCodec.Compress(type, cluster, compressed);
            var back = new byte[size];
            if (n <= 0 || !ClusterCodec.TryDecompress(type, compressed.AsSpan(0, n), back) || !back.AsSpan().SequenceEqual(cluster))
                Interlocked.Increment(ref failures);
            // Interleave failures too, so a context left dirty by one shows up in the next.
            ClusterCodec.TryDecompress(type, compressed.AsSpan(0, n / 2), back);
        });
        Assert.Equal(0, failures);
    }
}
