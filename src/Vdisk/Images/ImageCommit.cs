using Vdisk.Formats.Qcow2;

namespace Vdisk.Images;

/// <summary>
/// qemu-img commit on open images, in two steps that must run in this order: <see cref="CopyIntoBase"/> copies into
/// the base what the layers above it allocate and flushes the base; only once it has returned may
/// <see cref="EmptyTop"/> drop the top layer's clusters. A crash at any point then leaves the chain reading what it
/// read: the top still holds its data until the base holds it durably.
/// </summary>
public static class ImageCommit
{
    /// <summary>
    /// Copies every range some layer of <paramref name="top"/>'s chain above <paramref name="baseInChain"/> allocates
    /// into <paramref name="target"/>, as the top reads it: data as data, zeros as zeros. The base grows to the top's
    /// size first if it is smaller, and is flushed last, so that on return it alone reads, durably, what the top reads.
    /// </summary>
    /// <param name="top">The top of the chain, opened with its backing files (read-only will do).</param>
    /// <param name="baseInChain">The layer of that chain to commit into (<c>top.Backing</c> for a plain commit).</param>
    /// <param name="target">A writable handle on the same image as <paramref name="baseInChain"/>: best that layer
    /// itself, opened writable inside the chain (with <see cref="ImageOpenOptions.BackingOpener"/>), since the image
    /// locks refuse a second writer while the chain reads the file. A separate handle's writes are not seen through
    /// the chain's: close the chain before reading through it again.</param>
    /// <param name="progress">Receives the guest bytes covered, piece by piece, up to the top's size in all.</param>
    public static void CopyIntoBase(DiskImage top, DiskImage baseInChain, DiskImage target, Action<long>? progress = null)
    {
        var above = LayersAbove(top, baseInChain);
        if (target.Size < top.Size) target.Resize(top.Size);
        int piece = Math.Max(top.ClusterSize, 64 * 1024);
        var buffer = new byte[piece];
        for (long offset = 0; offset < top.Size;)
        {
            long length = Math.Min(piece - offset % piece, top.Size - offset);
            if (AnyAllocated(above, offset, length)) CopyPiece(top, target, offset, length, buffer);
            progress?.Invoke(length);
            offset += length;
        }
        target.Flush();
    }

    /// <summary>
    /// Makes every cluster of the top layer unallocated, so that it reads through to its backing file (what
    /// qemu-img commit leaves without -d). Run it only after <see cref="CopyIntoBase"/> has returned.
    /// </summary>
    /// <param name="top">The top layer, writable; its backing file need not be open.</param>
    public static void EmptyTop(DiskImage top)
    {
        if (top is not Qcow2Image qcow2)
            throw new DiskImageException(DiskImageErrorKind.UnsupportedFeature, top.Path, "Image format driver does not support emptying an image");
        qcow2.MakeEmpty();
    }

    /// <summary>The layers from <paramref name="top"/> down to, not including, <paramref name="baseInChain"/>.</summary>
    private static List<DiskImage> LayersAbove(DiskImage top, DiskImage baseInChain)
    {
        var above = new List<DiskImage>();
        for (var layer = top; !ReferenceEquals(layer, baseInChain); layer = layer.Backing)
        {
            if (layer is null) throw new ArgumentException("The base is not in the top's backing chain", nameof(baseInChain));
            above.Add(layer);
        }
        if (above.Count == 0) throw new ArgumentException("The base is the top itself", nameof(baseInChain));
        return above;
    }

    /// <summary>
    /// Copies one piece as qemu-img's commit job (a mirror) does, in granules of the base's cluster size (4 KiB to
    /// 64 KiB; 64 KiB without clusters): a granule the chain's block status calls zeros is written as zeros that may
    /// unmap (the base frees those clusters), any other as data, even data that happens to be zeros.
    /// </summary>
    private static void CopyPiece(DiskImage top, DiskImage target, long offset, long length, byte[] buffer)
    {
        int granule = target.ClusterSize <= 0 ? 65536 : Math.Clamp(target.ClusterSize, 4096, 65536);
        long end = offset + length;
        for (long at = offset; at < end;)
        {
            // A run of granules of one kind, written with one request.
            long runEnd = Math.Min(at + granule - at % granule, end);
            bool zero = ReadsAsZeros(top, at, runEnd - at);
            while (runEnd < end)
            {
                long next = Math.Min(runEnd + granule - runEnd % granule, end);
                if (ReadsAsZeros(top, runEnd, next - runEnd) != zero) break;
                runEnd = next;
            }
            if (zero) target.WriteZeroes(at, runEnd - at, mayUnmap: true);
            else
            {
                var span = buffer.AsMemory(0, (int)(runEnd - at));
                top.Read(at, span);
                target.Write(at, span);
            }
            at = runEnd;
        }
    }

    /// <summary>True when the chain's block status says all of [offset, offset+length) reads as zeros.</summary>
    private static bool ReadsAsZeros(DiskImage top, long offset, long length)
    {
        for (long at = offset, end = offset + length; at < end;)
        {
            var s = top.GetBlockStatus(at, end - at);
            if (!s.Zero) return false;
            at += s.Length;
        }
        return true;
    }

    /// <summary>True when any layer above the base allocates (data or zeros) part of [offset, offset+length).</summary>
    private static bool AnyAllocated(List<DiskImage> above, long offset, long length)
    {
        foreach (var layer in above)
        {
            long end = Math.Min(offset + length, layer.Size);
            for (long at = offset; at < end;)
            {
                var s = layer.GetLayerStatus(at, end - at);
                if (s.Allocation != LayerAllocation.Unallocated) return true;
                at += s.Length;
            }
        }
        return false;
    }
}
