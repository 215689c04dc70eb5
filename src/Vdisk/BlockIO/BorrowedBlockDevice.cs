namespace Vdisk.BlockIO;

/// <summary>Lends a device to an owner-minded consumer (an image) without letting it close the device.</summary>
public sealed class BorrowedBlockDevice : BlockDevice
{
    private readonly BlockDevice _inner;

    public BorrowedBlockDevice(BlockDevice inner) => _inner = inner;

    public override string Name => _inner.Name;
    public override bool IsReadOnly => _inner.IsReadOnly;
    public override int Alignment => _inner.Alignment;
    public override long GetLength() => _inner.GetLength();

    protected internal override ValueTask ReadCoreAsync(long offset, Memory<byte> buffer, bool async, CancellationToken ct) => _inner.ReadCoreAsync(offset, buffer, async, ct);
    protected internal override ValueTask WriteCoreAsync(long offset, ReadOnlyMemory<byte> buffer, bool async, CancellationToken ct) => _inner.WriteCoreAsync(offset, buffer, async, ct);
    protected internal override ValueTask WriteGatherCoreAsync(long offset, IReadOnlyList<ReadOnlyMemory<byte>> buffers, bool async, CancellationToken ct) => _inner.WriteGatherCoreAsync(offset, buffers, async, ct);
    protected internal override ValueTask WriteZeroesCoreAsync(long offset, long length, bool mayUnmap, bool async, CancellationToken ct) => _inner.WriteZeroesCoreAsync(offset, length, mayUnmap, async, ct);
    protected internal override ValueTask DiscardCoreAsync(long offset, long length, bool async, CancellationToken ct) => _inner.DiscardCoreAsync(offset, length, async, ct);
    protected internal override ValueTask FlushCoreAsync(bool async, CancellationToken ct) => _inner.FlushCoreAsync(async, ct);
    protected internal override ValueTask SetLengthCoreAsync(long length, bool async, CancellationToken ct) => _inner.SetLengthCoreAsync(length, async, ct);
    protected internal override ValueTask AllocateCoreAsync(long offset, long length, bool async, CancellationToken ct) => _inner.AllocateCoreAsync(offset, length, async, ct);
    protected internal override ValueTask<DeviceExtent> GetExtentCoreAsync(long offset, long maxLength, bool async, CancellationToken ct) => _inner.GetExtentCoreAsync(offset, maxLength, async, ct);
}
