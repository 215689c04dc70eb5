using System.IO.Compression;
using System.Runtime.InteropServices;
using static Vdisk.Formats.Qcow2.Compression.ZlibNative;

namespace Vdisk.Formats.Qcow2.Compression;

/// <summary>qcow2 compression_type=0: raw deflate (no zlib header or checksum) with a 4 KiB window.</summary>
internal static unsafe class ZlibClusterCodec
{
    // QEMU's qcow2 reader calls inflateInit2 with -12; any match distance beyond 4 KiB is
    // "invalid distance too far back" there, so the writer must never produce one.
    private const int WindowBits = -12;
    private const int MemLevel = 9;

    private static readonly ContextPool<Deflater> Deflaters = new(() => new Deflater(), ClusterCodec.PoolCapacity);

    public static bool TryDecompress(ReadOnlySpan<byte> compressed, Span<byte> cluster)
    {
        if (compressed.IsEmpty)
            return false;
        // DeflateStream reads any window up to 32 KiB, a superset of what QEMU writes, so the
        // managed inflater keeps the read path free of the native dependency.
        fixed (byte* source = compressed)
        {
            using var input = new UnmanagedMemoryStream(source, compressed.Length);
            using var inflater = new DeflateStream(input, CompressionMode.Decompress);
            var filled = 0;
            try
            {
                // Stop at cluster.Length: the compressed size is only known to the sector, so what
                // follows the stream (padding, or the next compressed cluster) must stay unread,
                // and a stream that would yield more is cut off exactly as QEMU's Z_BUF_ERROR case does.
                while (filled < cluster.Length)
                {
                    var n = inflater.Read(cluster[filled..]);
                    if (n == 0)
                        return false;
                    filled += n;
                }
            }
            catch (InvalidDataException)
            {
                return false;
            }
            return true;
        }
    }

    public static int Compress(ReadOnlySpan<byte> cluster, Span<byte> destination)
    {
        if (destination.IsEmpty)
            return -1;
        var deflater = Deflaters.Rent();
        try
        {
            return deflater.Compress(cluster, destination);
        }
        finally
        {
            Deflaters.Return(deflater);
        }
    }

    /// <summary>One native deflate state, kept at a fixed address because zlib stores a back pointer to it.</summary>
    private sealed class Deflater : SafeHandle
    {
        public Deflater() : base(0, ownsHandle: true)
        {
            var strm = (ZStream*)NativeMemory.AllocZeroed((nuint)sizeof(ZStream));
            int rc;
            try
            {
                rc = deflateInit2_(strm, Z_DEFAULT_COMPRESSION, Z_DEFLATED, WindowBits, MemLevel, Z_DEFAULT_STRATEGY, zlibVersion(), sizeof(ZStream));
            }
            catch (DllNotFoundException e)
            {
                NativeMemory.Free(strm);
                throw new PlatformNotSupportedException($"qcow2 zlib compression needs the system zlib ({Library}): {e.Message}", e);
            }
            if (rc != Z_OK)
            {
                NativeMemory.Free(strm);
                throw new InvalidOperationException($"zlib deflateInit2_ failed with {rc}");
            }
            SetHandle((nint)strm);
        }

        public override bool IsInvalid => handle == 0;

        public int Compress(ReadOnlySpan<byte> source, Span<byte> destination)
        {
            var strm = (ZStream*)handle;
            // Reset first rather than last so a context is clean even if an earlier use was cut short.
            var rc = deflateReset(strm);
            if (rc != Z_OK)
                throw new InvalidOperationException($"zlib deflateReset failed with {rc}");
            fixed (byte* src = source)
            fixed (byte* dst = destination)
            {
                strm->NextIn = src;
                strm->AvailIn = (uint)source.Length;
                strm->NextOut = dst;
                strm->AvailOut = (uint)destination.Length;
                rc = deflate(strm, Z_FINISH);
                var written = destination.Length - (int)strm->AvailOut;
                var message = rc is Z_STREAM_END or Z_OK or Z_BUF_ERROR ? null : Message(strm);
                // The buffers are unpinned once we leave this block; leave no pointers to them behind.
                strm->NextIn = null;
                strm->NextOut = null;
                return rc switch
                {
                    // deflate reports Z_OK rather than Z_STREAM_END when the stream exactly fills the
                    // output, so a finished stream is always strictly smaller than the destination:
                    // a result that only just fits would save nothing over storing the cluster as is.
                    Z_STREAM_END => written,
                    Z_OK or Z_BUF_ERROR => -1,
                    _ => throw new InvalidOperationException($"zlib deflate failed with {rc} ({message})"),
                };
            }
        }

        protected override bool ReleaseHandle()
        {
            var strm = (ZStream*)handle;
            deflateEnd(strm);
            NativeMemory.Free(strm);
            return true;
        }
    }
}
