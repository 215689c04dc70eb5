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
    /// <summary>Bytes at the start of a probed raw image that a write may not turn into another format's header.</summary>
    private const int GuardedBytes = ImageFormatRegistry.ProbeBytes;

    private readonly ImageFormatRegistry? _probedBy;

    /// <param name="probedBy">
    /// The registry whose probing chose raw for this file, when the format was not given. A guest write could
    /// otherwise put, say, a qcow2 header with a backing file name in sector 0, and the next probing open would
    /// read host files through it: as QEMU does, such writes are refused (EPERM) unless raw was asked for.
    /// </param>
    public RawImage(BlockDevice device, bool readOnly, ImageFormatRegistry? probedBy = null) : base(device, readOnly)
    {
        Size = RoundUpToSector(device.Length);
        _probedBy = probedBy;
    }

    internal static long RoundUpToSector(long bytes) => (bytes + 511) & ~511L;

    public override string FormatName => "raw";

    protected override ValueTask ReadCoreAsync(long offset, Memory<byte> buffer, bool async, CancellationToken ct)
        => Device.ReadCoreAsync(offset, buffer, async, ct);

    protected override ValueTask WriteCoreAsync(long offset, ReadOnlyMemory<byte> buffer, bool async, CancellationToken ct)
        => _probedBy is not null && offset < GuardedBytes
            ? GuardedWriteAsync(offset, buffer, async, ct)
            : Device.WriteCoreAsync(offset, buffer, async, ct);

    /// <summary>Checks what the first sector would hold after the write, then writes; two such writes at once may not interleave.</summary>
    private async ValueTask GuardedWriteAsync(long offset, ReadOnlyMemory<byte> buffer, bool async, CancellationToken ct)
    {
        if (async) await _firstSector.WaitAsync(ct).ConfigureAwait(false); else _firstSector.Wait(ct);
        try
        {
            // The sector as the next probe would see it: zeros past the end of a short file, as QEMU pads it.
            var sector = new byte[GuardedBytes];
            await Device.ReadCoreAsync(0, sector, async, ct).ConfigureAwait(false);
            var covered = buffer[..(int)Math.Min(buffer.Length, GuardedBytes - offset)];
            covered.Span.CopyTo(sector.AsSpan((int)offset));
            var (driver, foreign) = _probedBy!.Recognise(sector, path: null);
            if (foreign is not null || (driver is not null && driver.Name != FormatName))
                throw new DiskImageException(DiskImageErrorKind.ReadOnly, Path,
                    $"Write refused: it would make sector 0 of this raw image (its format was probed) look like a {foreign?.Name ?? driver!.Name} image; open it with format raw to write it",
                    offset, null, HostErrno.EPERM);
            await Device.WriteCoreAsync(offset, buffer, async, ct).ConfigureAwait(false);
        }
        finally { _firstSector.Release(); }
    }

    private readonly SemaphoreSlim _firstSector = new(1, 1);

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
        Device.AddPermissions(ImagePermissions.Resize);
        await Device.SetLengthCoreAsync(size, async, ct).ConfigureAwait(false);
        if (size > old)
        {
            switch (preallocation)
            {
                case "falloc":
                    await Device.AllocateCoreAsync(old, size - old, async, ct).ConfigureAwait(false);
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
