using System.Buffers;
using Vdisk.BlockIO;

namespace Vdisk.Images;

/// <summary>
/// A virtual disk: offset-based, thread-safe read, write, write-zeroes, discard, flush and allocation status.
/// Each operation has one implementation in a format driver, <c>...CoreAsync(bool async)</c>; the sync methods
/// run it synchronously and the async ones asynchronously, so both follow the same code path.
/// </summary>
public abstract class DiskImage : IDisposable, IAsyncDisposable
{
    private int _disposed;

    protected DiskImage(BlockDevice device, bool readOnly)
    {
        Device = device;
        IsReadOnly = readOnly;
    }

    /// <summary>The host file (or memory) holding the image.</summary>
    public BlockDevice Device { get; }
    public string Path => Device.Name;
    public abstract string FormatName { get; }
    public bool IsReadOnly { get; }
    /// <summary>Virtual disk size in bytes.</summary>
    public long Size { get; protected set; }
    /// <summary>The opened backing image, or null.</summary>
    public DiskImage? Backing { get; protected set; }
    /// <summary>The backing file name as stored in the image (may be relative to the image), or null.</summary>
    public virtual string? BackingFileName => null;
    public virtual string? BackingFormatName => null;
    /// <summary>Granularity of allocation (cluster size); 0 when the format has none.</summary>
    public virtual int ClusterSize => 0;
    /// <summary>The header's dirty flag (qemu-img info's "dirty-flag"): refcounts may be stale.</summary>
    public virtual bool IsDirty => false;
    /// <summary>Format-specific facts for `info` ("Format specific information"), in display order; empty if none.</summary>
    public virtual IReadOnlyList<InfoField> FormatSpecificInfo => Array.Empty<InfoField>();
    /// <summary>Internal snapshots, in table order; empty for formats without them.</summary>
    public virtual IReadOnlyList<SnapshotInfo> Snapshots => Array.Empty<SnapshotInfo>();

    // ---- the one implementation of each operation, in the format driver ----
    protected abstract ValueTask ReadCoreAsync(long offset, Memory<byte> buffer, bool async, CancellationToken ct);
    protected abstract ValueTask WriteCoreAsync(long offset, ReadOnlyMemory<byte> buffer, bool async, CancellationToken ct);
    protected abstract ValueTask WriteZeroesCoreAsync(long offset, long length, bool mayUnmap, bool async, CancellationToken ct);
    protected abstract ValueTask DiscardCoreAsync(long offset, long length, bool async, CancellationToken ct);
    protected abstract ValueTask FlushCoreAsync(bool async, CancellationToken ct);
    /// <summary>What this layer alone holds at offset (at most length bytes described).</summary>
    protected abstract ValueTask<LayerStatus> GetLayerStatusCoreAsync(long offset, long length, bool async, CancellationToken ct);
    /// <summary>Writes back metadata and releases resources; called once.</summary>
    protected abstract ValueTask CloseCoreAsync(bool async);

    // ---- sync API ----
    public void Read(long offset, Memory<byte> buffer) => Run(ReadChecked(offset, buffer, false, default));
    public void Read(long offset, Span<byte> buffer)
    {
        var rented = ArrayPool<byte>.Shared.Rent(buffer.Length);
        try
        {
            Read(offset, rented.AsMemory(0, buffer.Length));
            rented.AsSpan(0, buffer.Length).CopyTo(buffer);
        }
        finally { ArrayPool<byte>.Shared.Return(rented); }
    }
    public void Write(long offset, ReadOnlyMemory<byte> buffer) => Run(WriteChecked(offset, buffer, false, default));
    public void Write(long offset, ReadOnlySpan<byte> buffer)
    {
        var rented = ArrayPool<byte>.Shared.Rent(buffer.Length);
        try
        {
            buffer.CopyTo(rented);
            Write(offset, rented.AsMemory(0, buffer.Length));
        }
        finally { ArrayPool<byte>.Shared.Return(rented); }
    }
    public void WriteZeroes(long offset, long length, bool mayUnmap = false) => Run(WriteZeroesChecked(offset, length, mayUnmap, false, default));
    public void Discard(long offset, long length) => Run(DiscardChecked(offset, length, false, default));
    public void Flush() => Run(FlushChecked(false, default));
    public BlockStatus GetBlockStatus(long offset, long length) => Run(GetBlockStatusChecked(offset, length, false, default));
    public LayerStatus GetLayerStatus(long offset, long length) => Run(GetLayerStatusChecked(offset, length, false, default));

    // ---- async API ----
    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken ct = default) => ReadChecked(offset, buffer, true, ct);
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> buffer, CancellationToken ct = default) => WriteChecked(offset, buffer, true, ct);
    public ValueTask WriteZeroesAsync(long offset, long length, bool mayUnmap = false, CancellationToken ct = default) => WriteZeroesChecked(offset, length, mayUnmap, true, ct);
    public ValueTask DiscardAsync(long offset, long length, CancellationToken ct = default) => DiscardChecked(offset, length, true, ct);
    public ValueTask FlushAsync(CancellationToken ct = default) => FlushChecked(true, ct);
    public ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken ct = default) => GetBlockStatusChecked(offset, length, true, ct);
    public ValueTask<LayerStatus> GetLayerStatusAsync(long offset, long length, CancellationToken ct = default) => GetLayerStatusChecked(offset, length, true, ct);

    /// <summary>
    /// Checks the image's metadata for consistency and optionally repairs it (qemu-img check). Formats without a
    /// checker throw <see cref="DiskImageErrorKind.UnsupportedFeature"/> ("This image format does not support checks").
    /// </summary>
    public ImageCheckResult Check(CheckRepair repair = CheckRepair.None) => CheckCoreAsync(repair, false, default).GetAwaiter().GetResult();
    public ValueTask<ImageCheckResult> CheckAsync(CheckRepair repair = CheckRepair.None, CancellationToken ct = default) => CheckCoreAsync(repair, true, ct);

    protected virtual ValueTask<ImageCheckResult> CheckCoreAsync(CheckRepair repair, bool async, CancellationToken ct)
        => throw new DiskImageException(DiskImageErrorKind.UnsupportedFeature, Path, "This image format does not support checks");

    /// <summary>
    /// True when write-zeroes of this range would change only metadata or the file's allocation and never write
    /// zeroed data: what NBD's FAST_ZERO asks. Formats answer false whenever they are not sure.
    /// </summary>
    public virtual bool CanZeroWithoutWritingData(long offset, long length) => false;

    /// <summary>
    /// Changes the virtual size (qemu-img resize). Growing reads as zeros past the old end unless
    /// <paramref name="preallocation"/> (off, metadata, falloc, full) allocates it; shrinking drops the data past
    /// the new end. Formats that cannot resize throw <see cref="DiskImageErrorKind.UnsupportedFeature"/>.
    /// </summary>
    public void Resize(long size, string preallocation = "off") => ResizeChecked(size, preallocation, false, default).GetAwaiter().GetResult();
    public ValueTask ResizeAsync(long size, string preallocation = "off", CancellationToken ct = default) => ResizeChecked(size, preallocation, true, ct);

    private ValueTask ResizeChecked(long size, string preallocation, bool async, CancellationToken ct)
    {
        CheckWritable();
        if (size < 0) throw new DiskImageException(DiskImageErrorKind.InvalidArgument, Path, "New image size must be positive");
        if (preallocation is not ("off" or "metadata" or "falloc" or "full"))
            throw new DiskImageException(DiskImageErrorKind.InvalidArgument, Path, $"Invalid parameter '{preallocation}'");
        if (size < Size && preallocation != "off")
            throw new DiskImageException(DiskImageErrorKind.InvalidArgument, Path, "Preallocation can't be used for shrinking an image");
        return ResizeCoreAsync(size, preallocation, async, ct);
    }

    protected virtual ValueTask ResizeCoreAsync(long size, string preallocation, bool async, CancellationToken ct)
        => throw new DiskImageException(DiskImageErrorKind.UnsupportedFeature, Path, "Image format driver does not support resize");

    /// <summary>A seekable <see cref="System.IO.Stream"/> over the virtual disk.</summary>
    public ImageStream AsStream(bool leaveOpen = true) => new(this, leaveOpen);

    /// <summary>Read with an explicit sync/async choice, for format drivers reading their backing file.</summary>
    protected internal ValueTask ReadWithModeAsync(long offset, Memory<byte> buffer, bool async, CancellationToken ct)
        => ReadChecked(offset, buffer, async, ct);

    // ---- argument checks shared by both paths ----
    private ValueTask ReadChecked(long offset, Memory<byte> buffer, bool async, CancellationToken ct)
    {
        CheckRange(offset, buffer.Length);
        return buffer.Length == 0 ? ValueTask.CompletedTask : ReadCoreAsync(offset, buffer, async, ct);
    }

    private ValueTask WriteChecked(long offset, ReadOnlyMemory<byte> buffer, bool async, CancellationToken ct)
    {
        CheckWritable();
        CheckRange(offset, buffer.Length);
        return buffer.Length == 0 ? ValueTask.CompletedTask : WriteCoreAsync(offset, buffer, async, ct);
    }

    private ValueTask WriteZeroesChecked(long offset, long length, bool mayUnmap, bool async, CancellationToken ct)
    {
        CheckWritable();
        CheckRange(offset, length);
        return length == 0 ? ValueTask.CompletedTask : WriteZeroesCoreAsync(offset, length, mayUnmap, async, ct);
    }

    private ValueTask DiscardChecked(long offset, long length, bool async, CancellationToken ct)
    {
        CheckWritable();
        CheckRange(offset, length);
        return length == 0 ? ValueTask.CompletedTask : DiscardCoreAsync(offset, length, async, ct);
    }

    private ValueTask FlushChecked(bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        return IsReadOnly ? ValueTask.CompletedTask : FlushCoreAsync(async, ct);
    }

    private ValueTask<LayerStatus> GetLayerStatusChecked(long offset, long length, bool async, CancellationToken ct)
    {
        CheckRange(offset, length);
        if (length == 0) throw new DiskImageException(DiskImageErrorKind.InvalidArgument, Path, "Block status of an empty range", offset);
        return GetLayerStatusCoreAsync(offset, length, async, ct);
    }

    /// <summary>Walks down the backing chain until a layer decides what the range holds (qemu-img map's view).</summary>
    private async ValueTask<BlockStatus> GetBlockStatusChecked(long offset, long length, bool async, CancellationToken ct)
    {
        CheckRange(offset, length);
        if (length == 0) throw new DiskImageException(DiskImageErrorKind.InvalidArgument, Path, "Block status of an empty range", offset);
        DiskImage layer = this;
        int depth = 0;
        while (true)
        {
            var s = await layer.GetLayerStatusCoreAsync(offset, length, async, ct).ConfigureAwait(false);
            length = s.Length;
            switch (s.Allocation)
            {
                case LayerAllocation.Data:
                    return new BlockStatus(offset, length, true, s.ReadsZero, true, depth, s.HostOffset, layer.Path, s.Compressed);
                case LayerAllocation.Zero:
                    return new BlockStatus(offset, length, true, true, false, depth, s.HostOffset, layer.Path);
            }
            var below = layer.Backing;
            // Unallocated here, and nothing below (or past the end of the backing file): this layer decides (zeros),
            // as QEMU's block status does, with the host offset an unallocated subcluster may already have.
            if (below is null || offset >= below.Size)
                return new BlockStatus(offset, length, false, true, false, depth, s.HostOffset, s.HostOffset >= 0 ? layer.Path : null);
            length = Math.Min(length, below.Size - offset);
            layer = below;
            depth++;
        }
    }

    protected void CheckRange(long offset, long length)
    {
        ThrowIfDisposed();
        if (offset < 0 || length < 0 || offset > Size || length > Size - offset)
            throw new DiskImageException(DiskImageErrorKind.OutOfBounds, Path,
                $"Request of {length} bytes at offset {offset} is outside the image (size {Size})", offset);
    }

    private void CheckWritable()
    {
        ThrowIfDisposed();
        if (IsReadOnly) throw new DiskImageException(DiskImageErrorKind.ReadOnly, Path, "Image is read-only");
    }

    protected void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

    private static void Run(ValueTask task) => task.GetAwaiter().GetResult();
    private static T Run<T>(ValueTask<T> task) => task.GetAwaiter().GetResult();

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        try { CloseCoreAsync(false).GetAwaiter().GetResult(); }
        finally
        {
            Backing?.Dispose();
            Device.Dispose();
            GC.SuppressFinalize(this);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        try { await CloseCoreAsync(true).ConfigureAwait(false); }
        finally
        {
            if (Backing is not null) await Backing.DisposeAsync().ConfigureAwait(false);
            await Device.DisposeAsync().ConfigureAwait(false);
            GC.SuppressFinalize(this);
        }
    }

    /// <summary>Closes the image without writing anything back, as a crash would (qemu-io's abort).</summary>
    public void Abandon()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Backing?.Abandon();
        Device.Dispose();
    }
}
