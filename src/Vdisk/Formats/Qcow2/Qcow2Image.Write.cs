using System.Buffers;
using Vdisk.Formats.Qcow2.OnDisk;
using Vdisk.Images;

namespace Vdisk.Formats.Qcow2;

/// <summary>
/// Guest writes. A write to a cluster this image owns alone (COPIED) goes in place; anything else allocates a
/// new host cluster, fills the parts the write does not cover from the old content (copy-on-write), writes the
/// data, and only then links the cluster into the L2 table. The old cluster is released once that link is durable.
/// </summary>
public sealed partial class Qcow2Image
{
    protected override async ValueTask WriteCoreAsync(long offset, ReadOnlyMemory<byte> buffer, bool async, CancellationToken ct)
    {
        ThrowIfCorrupt();
        int done = 0;
        while (done < buffer.Length)
        {
            long pos = offset + done;
            int n = (int)Math.Min(buffer.Length - done, ClusterSize - (pos & (ClusterSize - 1)));
            await WriteClusterAsync(pos, buffer.Slice(done, n), async, ct).ConfigureAwait(false);
            done += n;
        }
        if (_writeThrough) await FlushCoreAsync(async, ct).ConfigureAwait(false);
    }

    private void ThrowIfCorrupt()
    {
        if (_corrupt)
            throw new CorruptImageException(Path, "Image is corrupt; further writes are refused until it is repaired (vdisk check -r all)");
    }

    /// <summary>Writes data that lies inside one guest cluster.</summary>
    private async ValueTask WriteClusterAsync(long offset, ReadOnlyMemory<byte> data, bool async, CancellationToken ct)
    {
        long guestCluster = offset >> _clusterBits;
        int inCluster = (int)(offset & (ClusterSize - 1));
        while (true)
        {
            TaskCompletionSource? busy = null, mine = null;
            L2Entry entry = default;
            long inPlaceHost = -1, newHost = -1;
            bool freshHost = false;
            await LockAsync(async, ct).ConfigureAwait(false);
            try
            {
                if (!_inFlight.TryGetValue(guestCluster, out busy))
                {
                    entry = await LookupAsync(guestCluster, async, ct).ConfigureAwait(false);
                    if (CanWriteInPlace(entry, inCluster, data.Length))
                    {
                        await CheckOwnedClusterAsync(entry.HostOffset, offset, async, ct).ConfigureAwait(false);
                        inPlaceHost = entry.HostOffset + inCluster;
                    }
                    else
                    {
                        mine = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                        _inFlight[guestCluster] = mine;
                        if (ReusesHostCluster(entry)) newHost = entry.HostOffset;
                        else
                        {
                            newHost = await _refcounts.AllocateAsync(1, async, ct).ConfigureAwait(false);
                            freshHost = newHost >= Device.Length;
                        }
                    }
                }
            }
            catch
            {
                if (mine is not null) { _inFlight.Remove(guestCluster); mine.TrySetResult(); }
                throw;
            }
            finally { Unlock(); }

            if (busy is not null)
            {
                if (async) await busy.Task.ConfigureAwait(false); else busy.Task.GetAwaiter().GetResult();
                continue;
            }
            if (inPlaceHost >= 0)
            {
                CheckDataWrite(inPlaceHost, data.Length);
                await Device.WriteCoreAsync(inPlaceHost, data, async, ct).ConfigureAwait(false);
                return;
            }
            try
            {
                await CopyOnWriteAsync(guestCluster, entry, newHost, freshHost, inCluster, data, async, ct).ConfigureAwait(false);
            }
            finally
            {
                await LockAsync(async, default).ConfigureAwait(false);
                try { _inFlight.Remove(guestCluster); }
                finally { Unlock(); }
                mine!.TrySetResult();
            }
            return;
        }
    }

    private long _fileLengthSeen;

    /// <summary>
    /// A cluster written in place must lie inside the file and carry a refcount: otherwise the allocator could
    /// hand it out again and two guest clusters would share it. Either means the metadata is corrupt.
    /// </summary>
    private async ValueTask CheckOwnedClusterAsync(long host, long guestOffset, bool async, CancellationToken ct)
    {
        // The file only shrinks through this image (TruncateFileAsync resets the mark), so an offset below a length
        // seen before is inside the file without asking the file system again on every write.
        if (host >= _fileLengthSeen) _fileLengthSeen = Device.Length;
        if (host >= _fileLengthSeen)
            throw SignalCorruption($"Data cluster offset 0x{host:x} lies past the end of the image file (L2 entry corrupted)", guestOffset);
        if (await _refcounts.GetAsync(host >> _clusterBits, async, ct).ConfigureAwait(false) == 0)
            throw SignalCorruption($"Data cluster at offset 0x{host:x} is in use but its refcount is 0", guestOffset);
    }

    private bool CanWriteInPlace(L2Entry entry, int inCluster, int length)
    {
        if (entry.Kind(_extended) != ClusterKind.Normal || !entry.IsCopied) return false;
        if (!_extended) return true;
        int first = inCluster >> SubclusterBits, last = (inCluster + length - 1) >> SubclusterBits;
        for (int s = first; s <= last; s++)
            if ((entry.Bitmap & Entry.SubclusterAllocated(s)) == 0) return false;
        return true;
    }

    /// <summary>A cluster this image owns alone keeps its host cluster even when it needs filling (zero or partly allocated).</summary>
    private bool ReusesHostCluster(L2Entry entry)
    {
        var kind = entry.Kind(_extended);
        return entry.IsCopied && (kind == ClusterKind.Normal || kind == ClusterKind.ZeroAllocated);
    }

    /// <summary>
    /// Fills a new (or reused) host cluster and links it. <paramref name="freshHost"/>: the cluster lies past the
    /// end of the file, so it has never held data and reads as zeros until written.
    /// </summary>
    private async ValueTask CopyOnWriteAsync(long guestCluster, L2Entry old, long host, bool freshHost, int inCluster, ReadOnlyMemory<byte> data, bool async, CancellationToken ct)
    {
        long clusterStart = guestCluster << _clusterBits;
        bool reused = ReusesHostCluster(old);
        // The byte range of the host cluster this write must fill: the whole cluster, or with extended L2
        // entries just the subclusters it touches when the rest of the cluster keeps its state.
        int start = 0, end = ClusterSize;
        ulong bitmap = 0;
        if (_extended)
        {
            int s0 = inCluster >> SubclusterBits, s1 = (inCluster + data.Length - 1) >> SubclusterBits;
            ulong touched = ((2UL << s1) - 1) & ~((1UL << s0) - 1);
            var kind = old.Kind(true);
            if (kind == ClusterKind.Compressed || (kind == ClusterKind.Normal && !old.IsCopied))
            {
                bitmap = kind == ClusterKind.Compressed ? Entry.AllAllocatedBitmap : (old.Bitmap & Entry.AllAllocatedBitmap) | touched;
                bitmap |= old.Bitmap & ~Entry.AllAllocatedBitmap & ~(touched << 32);
            }
            else
            {
                start = s0 << SubclusterBits;
                end = (s1 + 1) << SubclusterBits;
                bitmap = (old.Bitmap | touched) & ~(touched << 32);
            }
        }

        bool success = false;
        try
        {
            bool zeroBackground = await ReadsAsZeroAsync(old, clusterStart, async, ct).ConfigureAwait(false);
            if (freshHost && zeroBackground)
            {
                // Nothing to copy and nothing to hide: allocate the cluster as zeros (zero-range past the end) and
                // write just the data, as QEMU does with its zero-range fill, instead of a cluster of zeros.
                CheckDataWrite(host + start, end - start);
                if (data.Length < end - start)
                    await Device.WriteZeroesCoreAsync(host + start, end - start, mayUnmap: false, async, ct).ConfigureAwait(false);
                await Device.WriteCoreAsync(host + inCluster, data, async, ct).ConfigureAwait(false);
            }
            else await WriteFilledAsync(clusterStart, host, start, end, inCluster, data, zeroBackground, async, ct).ConfigureAwait(false);

            await LockAsync(async, ct).ConfigureAwait(false);
            try
            {
                var l2 = await GetWritableL2Async(guestCluster >> _l2Bits, async, ct).ConfigureAwait(false);
                WriteEntry(l2, guestCluster & (L2Entries - 1), (ulong)host | Entry.Copied, bitmap);
                // The link may reach the disk before the data only when that is harmless: a cluster that has never
                // held data reads as zeros, which is the old content when the old state read as zeros. As QEMU does,
                // this saves the barrier (an fdatasync) per allocating write on an image without a backing file.
                if (!(freshHost && zeroBackground)) _linkedSinceBarrier = true;
                if (!reused) ReleaseOldCluster(old, discard: false);
            }
            finally { Unlock(); }
            success = true;
        }
        finally
        {
            if (!success && !reused) await ReleaseAllocationAsync(host, async).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Writes [start, end) of the host cluster in one request: the data, and around it the old content (zeros when
    /// the old state reads as zeros, which needs no reads at all).
    /// </summary>
    private async ValueTask WriteFilledAsync(long clusterStart, long host, int start, int end, int inCluster, ReadOnlyMemory<byte> data,
        bool zeroBackground, bool async, CancellationToken ct)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(end - start);
        try
        {
            var fill = buffer.AsMemory(0, end - start);
            int tail = inCluster + data.Length;
            if (zeroBackground)
            {
                fill.Span[..(inCluster - start)].Clear();
                fill.Span[(tail - start)..].Clear();
            }
            else
            {
                await ReadGuestRangeAsync(clusterStart + start, fill[..(inCluster - start)], async, ct).ConfigureAwait(false);
                await ReadGuestRangeAsync(clusterStart + tail, fill[(tail - start)..], async, ct).ConfigureAwait(false);
            }
            data.CopyTo(fill[(inCluster - start)..]);
            CheckDataWrite(host + start, end - start);
            await Device.WriteCoreAsync(host + start, fill, async, ct).ConfigureAwait(false);
        }
        finally { ArrayPool<byte>.Shared.Return(buffer); }
    }

    /// <summary>Reads the current guest content of a range that may run past the virtual size (zeros there).</summary>
    private async ValueTask ReadGuestRangeAsync(long offset, Memory<byte> buffer, bool async, CancellationToken ct)
    {
        if (buffer.Length == 0) return;
        int inside = (int)Math.Clamp(Size - offset, 0, buffer.Length);
        if (inside > 0) await ReadCoreAsync(offset, buffer[..inside], async, ct).ConfigureAwait(false);
        buffer.Span[inside..].Clear();
    }

    /// <summary>True when the old state of a cluster reads as zeros everywhere, known without reading data.</summary>
    private ValueTask<bool> ReadsAsZeroAsync(L2Entry old, long clusterStart, bool async, CancellationToken ct)
    {
        var kind = old.Kind(_extended);
        if (kind is ClusterKind.ZeroPlain or ClusterKind.ZeroAllocated) return ValueTask.FromResult(true);
        if (kind != ClusterKind.Unallocated) return ValueTask.FromResult(false);
        if (_extended && (old.Bitmap & Entry.AllZeroBitmap) == Entry.AllZeroBitmap) return ValueTask.FromResult(true);
        return ValueTask.FromResult(Backing is null || clusterStart >= Backing.Size);
    }

    /// <summary>Queues the release of the host storage an L2 entry referenced, once its replacement is durable.</summary>
    private void ReleaseOldCluster(L2Entry old, bool discard)
    {
        switch (old.Kind(_extended))
        {
            case ClusterKind.Normal:
            case ClusterKind.ZeroAllocated:
                _refcounts.QueueFree(old.HostOffset, ClusterSize, discard);
                break;
            case ClusterKind.Compressed:
                var (offset, sectors) = old.CompressedExtent(_clusterBits);
                long first = offset & ~511L;
                _refcounts.QueueFree(first, (offset & ~511L) + sectors * 512L - first, discard);
                break;
        }
    }

    private async ValueTask ReleaseAllocationAsync(long host, bool async)
    {
        try
        {
            await LockAsync(async, default).ConfigureAwait(false);
            try { await _refcounts.UpdateAsync(host >> _clusterBits, -1, async).ConfigureAwait(false); }
            finally { Unlock(); }
        }
        catch (IOException) { /* the cluster leaks; check -r leaks reclaims it */ }
    }

    private void CheckDataWrite(long offset, int length)
    {
        var kind = _overlap.FindOverlap(offset, length, MetadataKind.None);
        if (kind != MetadataKind.None)
            throw SignalCorruption($"Preventing invalid write on metadata (overlaps with {OverlapChecker.Describe(kind)})", offset);
    }

    private void CheckL2Write(long offset, int length)
    {
        var kind = _overlap.FindOverlap(offset, length, MetadataKind.ActiveL2);
        if (kind != MetadataKind.None)
            throw SignalCorruption($"Preventing invalid write on metadata (overlaps with {OverlapChecker.Describe(kind)})", offset);
    }
}
