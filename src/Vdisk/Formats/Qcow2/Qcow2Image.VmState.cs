using Vdisk.Formats.Qcow2.OnDisk;
using Vdisk.Images;

namespace Vdisk.Formats.Qcow2;

/// <summary>
/// VM state, stored the qcow2 way: like guest data, at guest offsets starting with the first L1 entry past the
/// virtual disk, so the L1 table grows to map as much as is saved (no 4 GiB limit). A snapshot copies it with
/// the rest of the L1 table; the snapshot table records its 64-bit size.
/// </summary>
public sealed partial class Qcow2Image
{
    private const int VmStateChunk = 1 << 20;

    /// <summary>Where the VM state area begins: the first L1 entry that maps no guest disk (QEMU's vm_state_offset).</summary>
    public long VmStateOffset => _header.L1EntriesFor(Size) << (_clusterBits + _l2Bits);

    /// <summary>The VM state size recorded for the snapshot this image shows; 0 for the active image.</summary>
    public long VmStateSize => _viewedSnapshot?.VmStateSize ?? 0;

    /// <summary>
    /// Replaces the active image's VM state with all of <paramref name="source"/>'s bytes and returns how many
    /// there were. Chunks of zeros are not stored (the area reads as zeros), so a sparse state stays sparse.
    /// </summary>
    public long SaveVmState(Stream source) => SaveVmStateAsync(source, false, default).GetAwaiter().GetResult();
    public ValueTask<long> SaveVmStateAsync(Stream source, CancellationToken ct = default) => SaveVmStateAsync(source, true, ct);

    /// <summary>Reads VM state bytes at <paramref name="position"/> (zeros past what was saved).</summary>
    public void ReadVmState(long position, Memory<byte> buffer) => ReadVmStateAsync(position, buffer, false, default).GetAwaiter().GetResult();
    public ValueTask ReadVmStateAsync(long position, Memory<byte> buffer, CancellationToken ct = default) => ReadVmStateAsync(position, buffer, true, ct);

    /// <summary>Copies <paramref name="length"/> bytes of VM state (default: this snapshot's recorded size) to a stream.</summary>
    public void LoadVmState(Stream destination, long length = -1)
    {
        if (length < 0) length = VmStateSize;
        var buffer = new byte[VmStateChunk];
        for (long pos = 0; pos < length;)
        {
            int n = (int)Math.Min(buffer.Length, length - pos);
            ReadVmState(pos, buffer.AsMemory(0, n));
            destination.Write(buffer, 0, n);
            pos += n;
        }
    }

    private async ValueTask<long> SaveVmStateAsync(Stream source, bool async, CancellationToken ct)
    {
        EnsureSnapshotsWritable();
        await LockAsync(async, ct).ConfigureAwait(false);
        try { await DropVmStateLockedAsync(async, ct).ConfigureAwait(false); }
        finally { Unlock(); }
        long start = VmStateOffset;
        var buffer = new byte[VmStateChunk];
        long total = 0;
        while (true)
        {
            int n = 0;
            while (n < buffer.Length)
            {
                int r = async ? await source.ReadAsync(buffer.AsMemory(n), ct).ConfigureAwait(false) : source.Read(buffer, n, buffer.Length - n);
                if (r == 0) break;
                n += r;
            }
            if (n == 0) break;
            if (buffer.AsSpan(0, n).ContainsAnyExcept((byte)0))
                await WriteCoreAsync(start + total, buffer.AsMemory(0, n), async, ct).ConfigureAwait(false);
            total += n;
            if (n < buffer.Length) break;
        }
        await FlushCoreAsync(async, ct).ConfigureAwait(false);
        return total;
    }

    private ValueTask ReadVmStateAsync(long position, Memory<byte> buffer, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        if (position < 0 || position > long.MaxValue - VmStateOffset - buffer.Length)
            throw new DiskImageException(DiskImageErrorKind.OutOfBounds, Path, "VM state position out of range", position);
        return buffer.Length == 0 ? ValueTask.CompletedTask : ReadCoreAsync(VmStateOffset + position, buffer, async, ct);
    }

    /// <summary>
    /// Unmaps the active image's VM state area (every L1 entry past the disk), durably, and releases what it
    /// held. Caller holds the lock.
    /// </summary>
    private async ValueTask DropVmStateLockedAsync(bool async, CancellationToken ct)
    {
        long first = _header.L1EntriesFor(Size);
        bool any = false;
        for (long i = first; i < _l1.Length && !any; i++) any = (_l1[i] & (long)Entry.L1OffsetMask) != 0;
        if (!any) return;
        // Tables leave the cache below: what they hold must be on disk first.
        await FlushMetadataLockedAsync(async, ct).ConfigureAwait(false);
        await QueueDropL1EntriesFromAsync(first, async, ct).ConfigureAwait(false);
        await FlushMetadataLockedAsync(async, ct).ConfigureAwait(false);
    }
}
