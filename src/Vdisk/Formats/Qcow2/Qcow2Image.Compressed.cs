using System.Buffers;
using Vdisk.Formats.Qcow2.Compression;
using Vdisk.Formats.Qcow2.OnDisk;
using Vdisk.Images;

namespace Vdisk.Formats.Qcow2;

/// <summary>
/// Compressed cluster writes (qemu-img convert -c). Compressed streams are packed back to back at byte
/// granularity into host clusters; every compressed cluster that touches a host cluster holds one reference to
/// it, and its L2 entry never carries COPIED (the host cluster is shared by design).
/// </summary>
public sealed partial class Qcow2Image
{
    // Next free byte in the host cluster being filled with compressed streams; 0 when none is being filled.
    private long _compressedNext;

    public Qcow2CompressionType CompressionType => _header.CompressionType == 1 ? Qcow2CompressionType.Zstd : Qcow2CompressionType.Zlib;

    /// <summary>
    /// Writes whole clusters compressed, compressing them in parallel. <paramref name="offset"/> must be cluster
    /// aligned and the data whole clusters, except that it may end at the end of the image (the last cluster is
    /// padded with zeros, as QEMU does). A cluster that does not shrink is written uncompressed.
    /// </summary>
    public void WriteCompressed(long offset, ReadOnlyMemory<byte> data) => WriteCompressedCoreAsync(offset, data, false, default).GetAwaiter().GetResult();

    public ValueTask WriteCompressedAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct = default) => WriteCompressedCoreAsync(offset, data, true, ct);

    private async ValueTask WriteCompressedCoreAsync(long offset, ReadOnlyMemory<byte> data, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        if (IsReadOnly) throw new DiskImageException(DiskImageErrorKind.ReadOnly, Path, "Image is read-only");
        CheckRange(offset, data.Length);
        ThrowIfCorrupt();
        if ((offset & (ClusterSize - 1)) != 0 || data.Length == 0 || ((data.Length & (ClusterSize - 1)) != 0 && offset + data.Length != Size))
            throw new DiskImageException(DiskImageErrorKind.InvalidArgument, Path, "Compressed writes must cover whole clusters", offset);

        int count = (data.Length + ClusterSize - 1) >> _clusterBits;
        var compressed = new byte[count][];
        var lengths = new int[count];
        var type = CompressionType;
        void CompressOne(int i)
        {
            var cluster = data.Slice(i << _clusterBits, Math.Min(ClusterSize, data.Length - (i << _clusterBits)));
            byte[]? padded = null;
            var source = cluster.Span;
            if (cluster.Length < ClusterSize)
            {
                padded = ArrayPool<byte>.Shared.Rent(ClusterSize);
                Array.Clear(padded, 0, ClusterSize);
                cluster.Span.CopyTo(padded);
                source = padded.AsSpan(0, ClusterSize);
            }
            compressed[i] = ArrayPool<byte>.Shared.Rent(ClusterSize);
            // A cluster-sized destination: anything that does not end up smaller than a cluster is stored plain.
            lengths[i] = ClusterCodec.Compress(type, source, compressed[i].AsSpan(0, ClusterSize));
            if (padded is not null) ArrayPool<byte>.Shared.Return(padded);
        }
        try
        {
            if (count == 1) CompressOne(0);
            else if (async) await Task.WhenAll(Enumerable.Range(0, count).Select(i => Task.Run(() => CompressOne(i), ct))).ConfigureAwait(false);
            else Parallel.For(0, count, new ParallelOptions { CancellationToken = ct }, CompressOne);

            for (int i = 0; i < count; i++)
            {
                long pos = offset + ((long)i << _clusterBits);
                if (lengths[i] < 0)
                {
                    var plain = data.Slice(i << _clusterBits, Math.Min(ClusterSize, data.Length - (i << _clusterBits)));
                    await WriteCoreAsync(pos, plain, async, ct).ConfigureAwait(false);
                    continue;
                }
                await WriteCompressedClusterAsync(pos >> _clusterBits, compressed[i].AsMemory(0, lengths[i]), async, ct).ConfigureAwait(false);
            }
        }
        finally
        {
            foreach (var buffer in compressed)
                if (buffer is not null) ArrayPool<byte>.Shared.Return(buffer);
        }
        if (_writeThrough) await FlushCoreAsync(async, ct).ConfigureAwait(false);
    }

    private async ValueTask WriteCompressedClusterAsync(long guestCluster, ReadOnlyMemory<byte> stream, bool async, CancellationToken ct)
    {
        while (true)
        {
            TaskCompletionSource? busy, mine = null;
            long host = -1;
            await LockAsync(async, ct).ConfigureAwait(false);
            try
            {
                if (!_inFlight.TryGetValue(guestCluster, out busy))
                {
                    host = await AllocateCompressedBytesAsync(stream.Length, async, ct).ConfigureAwait(false);
                    mine = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    _inFlight[guestCluster] = mine;
                }
            }
            finally { Unlock(); }
            if (busy is not null)
            {
                if (async) await busy.Task.ConfigureAwait(false); else busy.Task.GetAwaiter().GetResult();
                continue;
            }

            bool linked = false;
            try
            {
                CheckDataWrite(host, stream.Length);
                await Device.WriteCoreAsync(host, stream, async, ct).ConfigureAwait(false);
                int sectors = (int)(((host + stream.Length - 1) >> 9) - (host >> 9) + 1);
                await LockAsync(async, ct).ConfigureAwait(false);
                try
                {
                    var l2 = await GetWritableL2Async(guestCluster >> _l2Bits, async, ct).ConfigureAwait(false);
                    // Re-read: the table may have been copied from a snapshot's, or changed while we wrote.
                    var current = ReadEntry(l2, guestCluster & (L2Entries - 1));
                    WriteEntry(l2, guestCluster & (L2Entries - 1), L2Entry.MakeCompressed(host, sectors, _clusterBits), 0);
                    linked = true;
                    ReleaseOldCluster(current, discard: false);
                }
                finally { Unlock(); }
            }
            finally
            {
                await LockAsync(async, default).ConfigureAwait(false);
                try
                {
                    _inFlight.Remove(guestCluster);
                    if (!linked)
                        for (long c = host >> _clusterBits; c <= (host + stream.Length - 1) >> _clusterBits; c++)
                            await _refcounts.UpdateAsync(c, -1, async, default).ConfigureAwait(false);
                }
                finally { Unlock(); }
                mine!.TrySetResult();
            }
            return;
        }
    }

    /// <summary>
    /// Finds room for <paramref name="length"/> (&lt; cluster size) bytes: after the previous compressed stream when it
    /// fits in that host cluster or the next free cluster follows it directly, else at the start of a new cluster.
    /// Each host cluster the bytes touch gains one reference. Caller holds the lock.
    /// </summary>
    private async ValueTask<long> AllocateCompressedBytesAsync(int length, bool async, CancellationToken ct)
    {
        long mask = ClusterSize - 1;
        long pos = _compressedNext;
        if (pos != 0 && (pos & mask) != 0)
        {
            long room = ClusterSize - (pos & mask);
            if (room >= length)
            {
                await _refcounts.UpdateAsync(pos >> _clusterBits, 1, async, ct).ConfigureAwait(false);
                _compressedNext = pos + length;
                return pos;
            }
            long next = await _refcounts.AllocateAsync(1, async, ct).ConfigureAwait(false);
            if (next == (pos & ~mask) + ClusterSize)
            {
                await _refcounts.UpdateAsync(pos >> _clusterBits, 1, async, ct).ConfigureAwait(false);
                _compressedNext = pos + length;
                return pos;
            }
            _compressedNext = next + length;
            return next;
        }
        long fresh = await _refcounts.AllocateAsync(1, async, ct).ConfigureAwait(false);
        _compressedNext = fresh + length;
        return fresh;
    }

    /// <summary>A host cluster whose last reference went away can be reused for anything: stop packing into it.</summary>
    private void OnClusterFreed(long cluster)
    {
        if (_compressedNext != 0 && (_compressedNext >> _clusterBits) == cluster) _compressedNext = 0;
    }
}
