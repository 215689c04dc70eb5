using System.Globalization;
using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2.OnDisk;
using Vdisk.Images;

namespace Vdisk.Formats.Qcow2;

/// <summary>
/// Internal snapshots: create (copy the active L1, one more reference to everything it reaches), delete (one
/// reference less, then COPIED recomputed), apply (the snapshot's tree becomes the active one through a new
/// L1 table) and read-only views of a snapshot. Each step makes what the next points to durable first.
/// </summary>
public sealed partial class Qcow2Image
{
    /// <summary>
    /// Takes a snapshot of the active image named <paramref name="name"/>, with <paramref name="vmState"/>'s bytes
    /// (if any) as its VM state. Returns what the snapshot table now records.
    /// </summary>
    public SnapshotInfo CreateSnapshot(string name, Stream? vmState = null, ulong vmClockNanoseconds = 0, long icount = 0)
        => CreateSnapshotAsync(name, vmState, vmClockNanoseconds, icount, false, default).GetAwaiter().GetResult();

    public ValueTask<SnapshotInfo> CreateSnapshotAsync(string name, Stream? vmState = null, ulong vmClockNanoseconds = 0, long icount = 0, CancellationToken ct = default)
        => CreateSnapshotAsync(name, vmState, vmClockNanoseconds, icount, true, ct);

    /// <summary>Deletes a snapshot (by ID or name) and frees what only it referenced.</summary>
    public void DeleteSnapshot(string idOrName) => DeleteSnapshotAsync(idOrName, false, default).GetAwaiter().GetResult();
    public ValueTask DeleteSnapshotAsync(string idOrName, CancellationToken ct = default) => DeleteSnapshotAsync(idOrName, true, ct);

    /// <summary>Reverts the active image to a snapshot (by ID or name): its data, its disk size and its VM state.</summary>
    public void ApplySnapshot(string idOrName) => ApplySnapshotAsync(idOrName, false, default).GetAwaiter().GetResult();
    public ValueTask ApplySnapshotAsync(string idOrName, CancellationToken ct = default) => ApplySnapshotAsync(idOrName, true, ct);

    /// <summary>A read-only image of a snapshot (by ID or name), without applying it; it shares this image's file.</summary>
    public Qcow2Image OpenSnapshot(string idOrName)
    {
        if (!IsReadOnly) Flush();
        return Open(new BorrowedBlockDevice(Device), new ImageOpenOptions { ReadOnly = true, Snapshot = idOrName, NoBacking = Backing is null });
    }

    private void EnsureSnapshotsWritable()
    {
        ThrowIfDisposed();
        if (IsReadOnly) throw new DiskImageException(DiskImageErrorKind.ReadOnly, Path, "Image is read-only");
        ThrowIfCorrupt();
    }

    private SnapshotEntry Find(string idOrName) => FindSnapshot(_snapshots, idOrName)
        ?? throw new DiskImageException(DiskImageErrorKind.NotFound, Path, $"Can't find snapshot '{idOrName}'");

    private void CheckNewName(string name)
    {
        if (_snapshots.Any(s => s.Name == name))
            throw new DiskImageException(DiskImageErrorKind.InvalidArgument, Path, $"A snapshot named '{name}' already exists");
        if (_snapshots.Count >= Qcow2Header.MaxSnapshots)
            throw new DiskImageException(DiskImageErrorKind.InvalidArgument, Path, "Too many snapshots");
        if (_refcounts.MaxRefcount < 2)
            throw new DiskImageException(DiskImageErrorKind.UnsupportedFeature, Path,
                "Snapshots need refcounts of at least 2 bits (use qemu-img amend to increase the refcount entry width)");
    }

    private async ValueTask<SnapshotInfo> CreateSnapshotAsync(string name, Stream? vmState, ulong vmClock, long icount, bool async, CancellationToken ct)
    {
        EnsureSnapshotsWritable();
        await LockAsync(async, ct).ConfigureAwait(false);
        try { CheckNewName(name); }
        finally { Unlock(); }
        long vmSize = vmState is null ? 0 : await SaveVmStateAsync(vmState, async, ct).ConfigureAwait(false);

        await LockAsync(async, ct).ConfigureAwait(false);
        try
        {
            CheckNewName(name);
            await FlushMetadataLockedAsync(async, ct).ConfigureAwait(false);
            // The snapshot's copy of the L1 table: new clusters, entries without COPIED (nothing is owned alone).
            long bytes = _l1.Length * 8L;
            long l1Offset = 0;
            if (bytes > 0)
            {
                int clusters = (int)((bytes + ClusterSize - 1) >> _clusterBits);
                l1Offset = await _refcounts.AllocateAsync(clusters, async, ct).ConfigureAwait(false);
                var raw = new byte[(long)clusters << _clusterBits];
                for (int i = 0; i < _l1.Length; i++)
                    System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(raw.AsSpan(i * 8), (ulong)_l1[i] & ~Entry.Copied);
                CheckDataWrite(l1Offset, raw.Length);
                await Device.WriteCoreAsync(l1Offset, raw, async, ct).ConfigureAwait(false);
            }
            await ChangeTreeRefcountsAsync(_l1, +1, clearCopied: true, async, ct).ConfigureAwait(false);
            // Refcounts, then the L2 tables without COPIED, then the L1: all durable before the table names the snapshot.
            await FlushMetadataLockedAsync(async, ct).ConfigureAwait(false);

            var now = DateTimeOffset.UtcNow;
            long ticks = now.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks;
            var entry = new SnapshotEntry
            {
                L1TableOffset = l1Offset,
                L1Size = (uint)_l1.Length,
                Id = NextSnapshotId(),
                Name = name,
                DateSeconds = (uint)(ticks / TimeSpan.TicksPerSecond),
                DateNanoseconds = (uint)(ticks % TimeSpan.TicksPerSecond * 100),
                VmClockNanoseconds = vmClock,
                VmStateSize = vmSize,
                DiskSize = Size,
                Icount = icount,
            };
            await WriteSnapshotTableAsync(new List<SnapshotEntry>(_snapshots) { entry }, async, ct).ConfigureAwait(false);
            // As QEMU: the active image needs the VM state no more, and keeping it would make the next snapshot copy it.
            if (vmSize > 0) await DropVmStateLockedAsync(async, ct).ConfigureAwait(false);
            await FlushMetadataLockedAsync(async, ct).ConfigureAwait(false);
            return Snapshots[^1];
        }
        finally { Unlock(); }
    }

    /// <summary>QEMU's rule: one more than the largest numeric ID.</summary>
    private string NextSnapshotId()
    {
        long max = 0;
        foreach (var s in _snapshots)
            if (long.TryParse(s.Id, NumberStyles.None, CultureInfo.InvariantCulture, out long id)) max = Math.Max(max, id);
        return (max + 1).ToString(CultureInfo.InvariantCulture);
    }

    /// <summary>The snapshot and its L1 table, checked; the image's metadata flushed first. Caller holds the lock.</summary>
    private async ValueTask<(SnapshotEntry Entry, long[] L1)> LoadSnapshotL1Async(string idOrName, bool async, CancellationToken ct)
    {
        var sn = Find(idOrName);
        ValidateSnapshotL1(sn, _header, Device.Length, Path);
        await FlushMetadataLockedAsync(async, ct).ConfigureAwait(false);
        return (sn, await ReadL1Async(sn.L1TableOffset, sn.L1Size, async, ct).ConfigureAwait(false));
    }

    private async ValueTask DeleteSnapshotAsync(string idOrName, bool async, CancellationToken ct)
    {
        EnsureSnapshotsWritable();
        await LockAsync(async, ct).ConfigureAwait(false);
        try
        {
            var (sn, l1) = await LoadSnapshotL1Async(idOrName, async, ct).ConfigureAwait(false);
            // First the table without the snapshot (durable), then the references it held go.
            await WriteSnapshotTableAsync(_snapshots.Where(s => !ReferenceEquals(s, sn)).ToList(), async, ct).ConfigureAwait(false);
            await ChangeTreeRefcountsAsync(l1, -1, clearCopied: false, async, ct).ConfigureAwait(false);
            await FreeNowAsync(sn.L1TableOffset, sn.L1Size * 8L, async, ct).ConfigureAwait(false);
            await RecomputeCopiedFlagsAsync(async, ct).ConfigureAwait(false);
            await FlushMetadataLockedAsync(async, ct).ConfigureAwait(false);
        }
        finally { Unlock(); }
    }

    private async ValueTask ApplySnapshotAsync(string idOrName, bool async, CancellationToken ct)
    {
        EnsureSnapshotsWritable();
        await LockAsync(async, ct).ConfigureAwait(false);
        try
        {
            var (sn, snapshotL1) = await LoadSnapshotL1Async(idOrName, async, ct).ConfigureAwait(false);
            if (sn.DiskSize != Size && _header.Version < 3)
                throw new DiskImageException(DiskImageErrorKind.UnsupportedFeature, Path, "Can't resize a v2 image which has snapshots");
            // The snapshot's tree gains the active L1's reference before any header points there.
            await ChangeTreeRefcountsAsync(snapshotL1, +1, clearCopied: false, async, ct).ConfigureAwait(false);
            var oldL1 = _l1;
            var content = snapshotL1.Select(e => e & ~unchecked((long)Entry.Copied)).ToArray();
            long entries = Math.Max(sn.L1Size, _header.L1EntriesFor(sn.DiskSize));
            await ReplaceL1Async(entries, sn.DiskSize, async, ct, content).ConfigureAwait(false);
            foreach (long e in oldL1)
                if ((e & (long)Entry.L1OffsetMask) != 0) _overlap.RemoveCluster(e & (long)Entry.L1OffsetMask);
            foreach (long e in _l1)
                if ((e & (long)Entry.L1OffsetMask) != 0) _overlap.AddCluster(e & (long)Entry.L1OffsetMask, MetadataKind.ActiveL2);
            // The switch is durable: the old active tree loses its reference.
            await ChangeTreeRefcountsAsync(oldL1, -1, clearCopied: false, async, ct).ConfigureAwait(false);
            await RecomputeCopiedFlagsAsync(async, ct).ConfigureAwait(false);
            await FlushMetadataLockedAsync(async, ct).ConfigureAwait(false);
        }
        finally { Unlock(); }
    }
}
