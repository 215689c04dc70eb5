namespace Vdisk.Formats.Qcow2.Compression;

/// <summary>
/// Compresses and decompresses single qcow2 clusters. Thread-safe: codec contexts come from small
/// shared pools, so concurrent callers never share one.
/// </summary>
public static class ClusterCodec
{
    internal static int PoolCapacity { get; } = Math.Max(2, Environment.ProcessorCount);

    /// <summary>
    /// Decompresses one cluster. <paramref name="compressed"/> may run past the end of the
    /// compressed stream (sector padding, or the start of the next compressed cluster): decoding
    /// stops once <paramref name="cluster"/> is full.
    /// </summary>
    /// <returns>false if the stream is invalid or yields fewer than <c>cluster.Length</c> bytes; never throws for bad data.</returns>
    public static bool TryDecompress(Qcow2CompressionType type, ReadOnlySpan<byte> compressed, Span<byte> cluster)
    {
        if (cluster.IsEmpty)
            throw new ArgumentException("cluster buffer is empty", nameof(cluster));
        return type switch
        {
            Qcow2CompressionType.Zlib => ZlibClusterCodec.TryDecompress(compressed, cluster),
            Qcow2CompressionType.Zstd => ZstdClusterCodec.TryDecompress(compressed, cluster),
            _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unknown qcow2 compression type"),
        };
    }

    /// <summary>
    /// Compresses one cluster: zlib as raw deflate with a 4 KiB window (what QEMU can inflate),
    /// zstd as a single frame.
    /// </summary>
    /// <returns>
    /// The number of bytes written to <paramref name="destination"/>, which is always less than
    /// <c>destination.Length</c>; or -1 if the result would not be smaller than that, in which case
    /// the caller stores the cluster uncompressed (pass a cluster-sized destination to match QEMU).
    /// </returns>
    public static int Compress(Qcow2CompressionType type, ReadOnlySpan<byte> cluster, Span<byte> destination)
    {
        if (cluster.IsEmpty)
            throw new ArgumentException("cluster is empty", nameof(cluster));
        return type switch
        {
            Qcow2CompressionType.Zlib => ZlibClusterCodec.Compress(cluster, destination),
            Qcow2CompressionType.Zstd => ZstdClusterCodec.Compress(cluster, destination),
            _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unknown qcow2 compression type"),
        };
    }
}
