using System.Buffers;
using Vdisk.Formats.Qcow2.Compression;
using Vdisk.Formats.Qcow2.OnDisk;
using Vdisk.Images;

namespace Vdisk.Formats.Qcow2;

/// <summary>Reads: map under the lock, then move data without it.</summary>
public sealed partial class Qcow2Image
{
    protected override async ValueTask ReadCoreAsync(long offset, Memory<byte> buffer, bool async, CancellationToken ct)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            long pos = offset + done;
            Mapping m;
            await LockAsync(async, ct).ConfigureAwait(false);
            try { m = await MapAsync(pos, buffer.Length - done, async, ct).ConfigureAwait(false); }
            finally { Unlock(); }
            var chunk = buffer.Slice(done, (int)m.Length);
            await ReadMappedAsync(m, pos, chunk, async, ct).ConfigureAwait(false);
            done += chunk.Length;
        }
    }

    private async ValueTask ReadMappedAsync(Mapping m, long guestOffset, Memory<byte> chunk, bool async, CancellationToken ct)
    {
        switch (m.Kind)
        {
            case ClusterKind.Normal:
                await Device.ReadCoreAsync(m.HostOffset, chunk, async, ct).ConfigureAwait(false);
                break;
            case ClusterKind.ZeroPlain:
            case ClusterKind.ZeroAllocated:
                chunk.Span.Clear();
                break;
            case ClusterKind.Compressed:
                await ReadCompressedAsync(m.RawEntry, guestOffset, chunk, async, ct).ConfigureAwait(false);
                break;
            default:
                await ReadBackingAsync(guestOffset, chunk, async, ct).ConfigureAwait(false);
                break;
        }
    }

    /// <summary>Reads what the backing chain holds (zeros past its end, or without one).</summary>
    private async ValueTask ReadBackingAsync(long offset, Memory<byte> buffer, bool async, CancellationToken ct)
    {
        int fromBacking = Backing is null ? 0 : (int)Math.Clamp(Backing.Size - offset, 0, buffer.Length);
        if (fromBacking > 0) await Backing!.ReadWithModeAsync(offset, buffer[..fromBacking], async, ct).ConfigureAwait(false);
        buffer.Span[fromBacking..].Clear();
    }

    private async ValueTask ReadCompressedAsync(ulong raw, long guestOffset, Memory<byte> buffer, bool async, CancellationToken ct)
    {
        var cluster = ArrayPool<byte>.Shared.Rent(ClusterSize);
        try
        {
            await DecompressClusterAsync(raw, guestOffset, cluster.AsMemory(0, ClusterSize), async, ct).ConfigureAwait(false);
            cluster.AsSpan((int)(guestOffset & (ClusterSize - 1)), buffer.Length).CopyTo(buffer.Span);
        }
        finally { ArrayPool<byte>.Shared.Return(cluster); }
    }

    private async ValueTask DecompressClusterAsync(ulong raw, long guestOffset, Memory<byte> cluster, bool async, CancellationToken ct)
    {
        var (hostOffset, sectors) = new L2Entry(raw).CompressedExtent(_clusterBits);
        // The sector count covers the data from the sector holding the offset; the stream ends before that.
        long end = (hostOffset & ~511L) + sectors * 512L;
        int length = (int)(end - hostOffset);
        // The last stream of a file may end inside its final sector: the file then ends before the sector does.
        if (hostOffset < Device.Length) length = (int)Math.Min(length, Device.Length - hostOffset);
        if (hostOffset + length > Device.Length || length <= 0)
            throw new CorruptImageException(Path, $"Compressed cluster at host offset 0x{hostOffset:x} extends past the end of the file", guestOffset);
        var compressed = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            await Device.ReadCoreAsync(hostOffset, compressed.AsMemory(0, length), async, ct).ConfigureAwait(false);
            var type = _header.CompressionType == 1 ? Qcow2CompressionType.Zstd : Qcow2CompressionType.Zlib;
            if (!ClusterCodec.TryDecompress(type, compressed.AsSpan(0, length), cluster.Span))
                throw new DiskImageException(DiskImageErrorKind.Io, Path,
                    $"Could not decompress the cluster stored at host offset 0x{hostOffset:x}", guestOffset);
        }
        finally { ArrayPool<byte>.Shared.Return(compressed); }
    }
}
