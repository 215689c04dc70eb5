using System.Runtime.InteropServices;
using ZstdSharp;
using ZstdSharp.Unsafe;

namespace Vdisk.Formats.Qcow2.Compression;

/// <summary>qcow2 compression_type=1: one zstd frame per cluster, as QEMU writes with ZSTD_compressStream2(ZSTD_e_end).</summary>
internal static unsafe class ZstdClusterCodec
{
    // QEMU leaves the level at libzstd's default and turns on no checksum; ZSTD_compress2 with the
    // whole cluster in hand is the one-shot form of its e_end call and also records the content size.
    private const int Level = 3;

    // ZSTD_d_stableOutBuffer: the decoder writes straight into the caller's cluster buffer and
    // allocates no window buffer of its own, so a frame header declaring a huge window cannot make
    // us allocate it, and a frame that would overflow the cluster fails with dstSize_tooSmall.
    private const ZSTD_dParameter StableOutBuffer = ZSTD_dParameter.ZSTD_d_experimentalParam2;

    private static readonly ContextPool<Compressor> Compressors = new(() => new Compressor(Level), ClusterCodec.PoolCapacity);
    private static readonly ContextPool<Decoder> Decoders = new(() => new Decoder(), ClusterCodec.PoolCapacity);

    public static bool TryDecompress(ReadOnlySpan<byte> compressed, Span<byte> cluster)
    {
        if (compressed.IsEmpty)
            return false;
        var decoder = Decoders.Rent();
        try
        {
            return decoder.TryDecompress(compressed, cluster);
        }
        finally
        {
            Decoders.Return(decoder);
        }
    }

    public static int Compress(ReadOnlySpan<byte> cluster, Span<byte> destination)
    {
        if (destination.IsEmpty)
            return -1;
        var compressor = Compressors.Rent();
        try
        {
            // A result that only just fits would save nothing over storing the cluster as is.
            return compressor.TryWrap(cluster, destination, out var written) && written < destination.Length ? written : -1;
        }
        finally
        {
            Compressors.Return(compressor);
        }
    }

    private sealed class Decoder : SafeHandle
    {
        public Decoder() : base(0, ownsHandle: true)
        {
            var dctx = Methods.ZSTD_createDCtx();
            if (dctx == null)
                throw new OutOfMemoryException("ZSTD_createDCtx failed");
            SetHandle((nint)dctx);
            Check(Methods.ZSTD_DCtx_setParameter(dctx, StableOutBuffer, 1));
        }

        public override bool IsInvalid => handle == 0;

        public bool TryDecompress(ReadOnlySpan<byte> compressed, Span<byte> cluster)
        {
            var dctx = (ZSTD_DCtx_s*)handle;
            // A session reset keeps the parameters and forgets any half-read frame from a failed call.
            Check(Methods.ZSTD_DCtx_reset(dctx, ZSTD_ResetDirective.ZSTD_reset_session_only));
            fixed (byte* src = compressed)
            fixed (byte* dst = cluster)
            {
                var input = new ZSTD_inBuffer_s { src = src, size = (nuint)compressed.Length, pos = 0 };
                var output = new ZSTD_outBuffer_s { dst = dst, size = (nuint)cluster.Length, pos = 0 };
                while (true)
                {
                    var inBefore = input.pos;
                    var outBefore = output.pos;
                    var rc = Methods.ZSTD_decompressStream(dctx, &output, &input);
                    if (Methods.ZSTD_isError(rc))
                        return false;
                    // Done only when the cluster is full and the frame has ended (rc == 0), as in
                    // QEMU; the sector padding or next cluster after the frame is never looked at.
                    if (rc == 0 && output.pos == output.size)
                        return true;
                    // A frame that ends early is followed by another frame or by padding, which
                    // fails above; no progress at all means the input ran out.
                    if (input.pos == inBefore && output.pos == outBefore)
                        return false;
                }
            }
        }

        protected override bool ReleaseHandle()
        {
            Methods.ZSTD_freeDCtx((ZSTD_DCtx_s*)handle);
            return true;
        }

        private static void Check(nuint rc)
        {
            if (Methods.ZSTD_isError(rc))
                throw new InvalidOperationException($"zstd: {Methods.ZSTD_getErrorName(rc)}");
        }
    }
}
