using System.IO.Compression;

namespace Vdisk.Formats.Qcow2.Compression;

public enum Qcow2CompressionType : byte { Zlib = 0, Zstd = 1 }

/// <summary>Placeholder decompressor (replaced by the full codec implementation).</summary>
public static class ClusterCodec
{
    public static bool TryDecompress(Qcow2CompressionType type, ReadOnlySpan<byte> compressed, Span<byte> cluster)
    {
        try
        {
            if (type == Qcow2CompressionType.Zlib)
            {
                using var input = new MemoryStream(compressed.ToArray());
                using var inflater = new DeflateStream(input, CompressionMode.Decompress);
                int done = 0;
                while (done < cluster.Length)
                {
                    int n = inflater.Read(cluster[done..]);
                    if (n == 0) return false;
                    done += n;
                }
                return true;
            }
            using var zin = new MemoryStream(compressed.ToArray());
            using var z = new ZstdSharp.DecompressionStream(zin);
            int got = 0;
            while (got < cluster.Length)
            {
                int n = z.Read(cluster[got..]);
                if (n == 0) return false;
                got += n;
            }
            return true;
        }
        catch (Exception e) when (e is InvalidDataException or IOException or ZstdSharp.ZstdException)
        {
            return false;
        }
    }

    public static int Compress(Qcow2CompressionType type, ReadOnlySpan<byte> cluster, Span<byte> destination) => -1;
}
