using System.Buffers.Binary;
using Vdisk.Formats.Qcow2.OnDisk;
using Vdisk.Images;

namespace Vdisk.Formats.Qcow2;

/// <summary>
/// The dirty bit (incompatible bit 0) and lazy refcounts. With lazy refcounts the header is marked dirty, and
/// that mark flushed, before the first L2 update that may reach the disk ahead of its refcounts; from then on
/// refcount blocks are written only when evicted or when the image is marked clean again: refcount cache
/// flushed, then the bit cleared. A dirty image found at open is repaired by a metadata scan first.
/// </summary>
public sealed partial class Qcow2Image
{
    private async ValueTask MarkDirtyAsync(bool async, CancellationToken ct)
    {
        if (_header.Incompatible.HasFlag(IncompatibleFeatures.Dirty)) return;
        await WriteIncompatibleBitsAsync(_header.Incompatible | IncompatibleFeatures.Dirty, async, ct).ConfigureAwait(false);
        await Device.FlushCoreAsync(async, ct).ConfigureAwait(false);
        // Only once the mark is durable may L2 tables run ahead of the refcounts.
        _header.Incompatible |= IncompatibleFeatures.Dirty;
    }

    /// <summary>Makes refcounts durable and clears the dirty bit. Caller holds the lock.</summary>
    private async ValueTask MarkCleanLockedAsync(bool async, CancellationToken ct)
    {
        if (!_header.Incompatible.HasFlag(IncompatibleFeatures.Dirty) || _corrupt) return;
        await FlushMetadataLockedAsync(async, ct).ConfigureAwait(false);
        await _refcounts.WriteBackAsync(async, ct).ConfigureAwait(false);
        await Device.FlushCoreAsync(async, ct).ConfigureAwait(false);
        await WriteIncompatibleBitsAsync(_header.Incompatible & ~IncompatibleFeatures.Dirty, async, ct).ConfigureAwait(false);
        await Device.FlushCoreAsync(async, ct).ConfigureAwait(false);
        _header.Incompatible &= ~IncompatibleFeatures.Dirty;
    }

    /// <summary>Flushes everything, refcounts included, and clears the dirty bit (QEMU's qcow2_mark_clean).</summary>
    public void MarkClean() => MarkCleanAsync(false, default).GetAwaiter().GetResult();
    public ValueTask MarkCleanAsync(CancellationToken ct = default) => MarkCleanAsync(true, ct);

    private async ValueTask MarkCleanAsync(bool async, CancellationToken ct)
    {
        if (IsReadOnly) return;
        await LockAsync(async, ct).ConfigureAwait(false);
        try { await MarkCleanLockedAsync(async, ct).ConfigureAwait(false); }
        finally { Unlock(); }
    }

    private async ValueTask WriteIncompatibleBitsAsync(IncompatibleFeatures bits, bool async, CancellationToken ct)
    {
        var raw = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(raw, (ulong)bits);
        await Device.WriteCoreAsync(HeaderField.IncompatibleFeatures, raw, async, ct).ConfigureAwait(false);
    }

    /// <summary>A read-write open of a dirty image repairs it first, as QEMU does ("check -r all"), and says so.</summary>
    private void RepairDirtyImage(ImageOpenOptions options)
    {
        var result = Check(CheckRepair.All);
        foreach (var line in result.Messages) options.Messages?.Invoke(line);
        if (result.Corruptions > 0 || result.CheckErrors > 0 || IsDirty)
            throw new DiskImageException(DiskImageErrorKind.CorruptImage, Path, "Could not repair dirty image");
    }
}
