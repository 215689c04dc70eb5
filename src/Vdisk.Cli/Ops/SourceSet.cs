using Vdisk.Images;

namespace Vdisk.Cli.Ops;

/// <summary>What a range of the sources asks of the target (qemu-img convert's BLK_DATA / BLK_ZERO / BLK_BACKING_FILE).</summary>
internal enum RangeKind { Data, Zero, Backing }

/// <summary>Several source images seen as one disk, each following the previous one (qemu-img convert src1 src2 ... dst).</summary>
internal sealed class SourceSet(IReadOnlyList<DiskImage> images)
{
    private readonly long[] _starts = Starts(images);

    public IReadOnlyList<DiskImage> Images { get; } = images;
    public long Size => _starts[^1];

    private static long[] Starts(IReadOnlyList<DiskImage> images)
    {
        var starts = new long[images.Count + 1];
        for (int i = 0; i < images.Count; i++) starts[i + 1] = starts[i] + images[i].Size;
        return starts;
    }

    private int IndexOf(long offset)
    {
        int i = Array.BinarySearch(_starts, offset);
        i = i >= 0 ? i : ~i - 1;
        // Skip empty sources: the offset belongs to the first one that has bytes there.
        while (i < Images.Count - 1 && _starts[i + 1] == offset) i++;
        return i;
    }

    /// <summary>
    /// What [offset, offset+max) holds, as far as one answer goes (never past the end of one source). With
    /// <paramref name="topOnly"/> (the target has its own backing file) only the top layer counts: what it does not
    /// allocate is left to the target's backing file.
    /// </summary>
    public async ValueTask<(RangeKind Kind, long Length)> StatusAsync(long offset, long max, bool topOnly, CancellationToken ct)
    {
        int i = IndexOf(offset);
        var image = Images[i];
        long local = offset - _starts[i];
        long len = Math.Min(max, image.Size - local);
        if (topOnly)
        {
            var layer = await image.GetLayerStatusAsync(local, len, ct).ConfigureAwait(false);
            var kind = layer.Allocation switch
            {
                LayerAllocation.Data => layer.ReadsZero ? RangeKind.Zero : RangeKind.Data,
                LayerAllocation.Zero => RangeKind.Zero,
                _ => image.Backing is null ? RangeKind.Zero : RangeKind.Backing,
            };
            return (kind, layer.Length);
        }
        var s = await image.GetBlockStatusAsync(local, len, ct).ConfigureAwait(false);
        return (s.Zero ? RangeKind.Zero : RangeKind.Data, s.Length);
    }

    public async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken ct)
    {
        while (buffer.Length > 0)
        {
            int i = IndexOf(offset);
            long local = offset - _starts[i];
            int n = (int)Math.Min(buffer.Length, Images[i].Size - local);
            await Images[i].ReadAsync(local, buffer[..n], ct).ConfigureAwait(false);
            buffer = buffer[n..];
            offset += n;
        }
    }
}
