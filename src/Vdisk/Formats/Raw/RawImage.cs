using Vdisk.BlockIO;
using Vdisk.Images;

namespace Vdisk.Formats.Raw;

/// <summary>A raw image: every operation passes straight to the file; holes read as zeros.</summary>
public sealed class RawImage : DiskImage
{
    public RawImage(BlockDevice device, bool readOnly) : base(device, readOnly)
    {
        Size = device.Length;
    }

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
        var extent = await Device.GetExtentCoreAsync(offset, length, async, ct).ConfigureAwait(false);
        return new LayerStatus(offset, Math.Min(extent.Length, length), extent.IsData ? LayerAllocation.Data : LayerAllocation.Zero, offset);
    }

    protected override ValueTask CloseCoreAsync(bool async)
        => IsReadOnly ? ValueTask.CompletedTask : Device.FlushCoreAsync(async, default);
}
