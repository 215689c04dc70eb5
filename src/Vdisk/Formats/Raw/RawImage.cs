using Vdisk.BlockIO;
using Vdisk.Images;

namespace Vdisk.Formats.Raw;

/// <summary>
/// A raw image: every operation passes straight to the file; holes read as zeros. As in QEMU's block layer, the
/// virtual size is the file's length rounded up to 512 bytes: the bytes past the end of the file read as zeros and
/// a write there extends the file.
/// </summary>
public sealed class RawImage : DiskImage
{
    public RawImage(BlockDevice device, bool readOnly) : base(device, readOnly)
    {
        Size = RoundUpToSector(device.Length);
    }

    internal static long RoundUpToSector(long bytes) => (bytes + 511) & ~511L;

    public override string FormatName => "raw";

    protected override ValueTask ReadCoreAsync(long offset, Memory<byte> buffer, bool async, CancellationToken ct)
        => Device.ReadCoreAsync(offset, buffer, async, ct);

    protected override ValueTask WriteCoreAsync(long offset, ReadOnlyMemory<byte> buffer, bool async, CancellationToken ct)
        => Device.WriteCoreAsync(offset, buffer, async, ct);

    protected override ValueTask WriteZeroesCoreAsync(long offset, long length, bool mayUnmap, bool async, CancellationToken ct)
        => Device.WriteZeroesCoreAsync(offset, length, mayUnmap, async, ct);

    public override bool CanZeroWithoutWritingData(long offset, long length) => Device is FileBlockDevice { ZeroesByAllocation: true };

    protected override ValueTask DiscardCoreAsync(long offset, long length, bool async, CancellationToken ct)
        => Device.DiscardCoreAsync(offset, length, async, ct);

    protected override ValueTask FlushCoreAsync(bool async, CancellationToken ct) => Device.FlushCoreAsync(async, ct);

    protected override async ValueTask<LayerStatus> GetLayerStatusCoreAsync(long offset, long length, bool async, CancellationToken ct)
    {
        // Past the end of the file (inside the last, partial sector) reads as zeros, which qemu-img map shows as a zero
        // range with its offset.
        long fileLength = Device.Length;
        if (offset >= fileLength) return new LayerStatus(offset, length, LayerAllocation.Zero, offset);
        var extent = await Device.GetExtentCoreAsync(offset, Math.Min(length, fileLength - offset), async, ct).ConfigureAwait(false);
        return new LayerStatus(offset, Math.Min(extent.Length, length), extent.IsData ? LayerAllocation.Data : LayerAllocation.Zero, offset);
    }

    /// <summary>The file takes the new length; falloc and full preallocate the grown part, as qemu-img does.</summary>
    protected override async ValueTask ResizeCoreAsync(long size, string preallocation, bool async, CancellationToken ct)
    {
        long old = Size;
        await Device.SetLengthCoreAsync(size, async, ct).ConfigureAwait(false);
        if (size > old)
        {
            switch (preallocation)
            {
                case "falloc" when Device is FileBlockDevice f:
                    f.Allocate(old, size - old);
                    break;
                case "full":
                    RawFormat.WriteZeros(Device, old, size - old);
                    break;
            }
        }
        await Device.FlushCoreAsync(async, ct).ConfigureAwait(false);
        Size = RoundUpToSector(size);
    }

    protected override ValueTask CloseCoreAsync(bool async)
        => IsReadOnly ? ValueTask.CompletedTask : Device.FlushCoreAsync(async, default);
}
