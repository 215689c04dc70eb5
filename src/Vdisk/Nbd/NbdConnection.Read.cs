using System.Buffers.Binary;

namespace Vdisk.Nbd;

/// <summary>The replies that carry data: READ (simple, or structured with holes left out) and BLOCK_STATUS.</summary>
public sealed partial class NbdConnection
{
    /// <summary>Stops a BLOCK_STATUS reply from growing without bound on a badly fragmented image; the client asks again for the rest.</summary>
    private const int MaxExtents = 1 << 16;
    private const int BlockStatusReplyMax = NbdReplyWriter.ChunkHeaderSize + 4 + 8 * MaxExtents;

    private async Task<ReplyPieces> SimpleReadAsync(NbdRequest r)
    {
        int length = (int)r.Length;
        var reply = new ReplyPieces(_buffers);
        var buffer = reply.Rent(NbdReplyWriter.SimpleReplySize + length);
        await Export.Image.ReadAsync((long)r.Offset, buffer[NbdReplyWriter.SimpleReplySize..]).ConfigureAwait(false);
        NbdReplyWriter.EncodeSimpleReply(buffer.Span, NbdError.None, r.Cookie);
        reply.Add(buffer);
        return reply;
    }

    /// <summary>
    /// Ranges that read as zeros go out as OFFSET_HOLE chunks, without reading them; the rest as OFFSET_DATA. With
    /// DF the whole request is one chunk. Everything is read before the first chunk is sent, so a failure can
    /// still be a single clean ERROR chunk.
    /// </summary>
    private async Task<ReplyPieces> StructuredReadAsync(NbdRequest r)
    {
        long start = (long)r.Offset;
        int length = (int)r.Length;
        var reply = new ReplyPieces(_buffers);
        if (length == 0)
        {
            var none = new byte[NbdReplyWriter.ChunkHeaderSize];
            NbdReplyWriter.EncodeChunkHeader(none, NbdReplyFlags.Done, NbdReplyType.None, r.Cookie, 0);
            reply.Add(none);
            return reply;
        }
        var extents = await ZeroExtentsAsync(start, length).ConfigureAwait(false);
        if (r.Flags.HasFlag(NbdCommandFlags.DontFragment) && extents.Count > 1) extents = [(0, length, false)];
        if (extents is [(_, _, false)])
        {
            // All data, the usual case: header and data in one buffer go out in one send instead of two.
            const int Header = NbdReplyWriter.ChunkHeaderSize + 8;
            var whole = reply.Rent(Header + length);
            await Export.Image.ReadAsync(start, whole[Header..]).ConfigureAwait(false);
            NbdReplyWriter.EncodeChunkHeader(whole.Span, NbdReplyFlags.Done, NbdReplyType.OffsetData, r.Cookie, 8 + length);
            BinaryPrimitives.WriteInt64BigEndian(whole.Span[NbdReplyWriter.ChunkHeaderSize..], start);
            reply.Add(whole);
            return reply;
        }
        var data = extents.Exists(e => !e.Zero) ? reply.Rent(length) : Memory<byte>.Empty;
        foreach (var (at, count, zero) in extents)
            if (!zero) await Export.Image.ReadAsync(start + at, data.Slice(at, count)).ConfigureAwait(false);
        for (int i = 0; i < extents.Count; i++)
        {
            var (at, count, zero) = extents[i];
            var flags = i == extents.Count - 1 ? NbdReplyFlags.Done : 0;
            var header = new byte[NbdReplyWriter.ChunkHeaderSize + (zero ? 12 : 8)];
            NbdReplyWriter.EncodeChunkHeader(header, flags, zero ? NbdReplyType.OffsetHole : NbdReplyType.OffsetData, r.Cookie, zero ? 12 : 8 + count);
            BinaryPrimitives.WriteInt64BigEndian(header.AsSpan(NbdReplyWriter.ChunkHeaderSize), start + at);
            if (zero) BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(NbdReplyWriter.ChunkHeaderSize + 8), count);
            reply.Add(header);
            if (!zero) reply.Add(data.Slice(at, count));
        }
        return reply;
    }

    /// <summary>The request split into maximal runs that do or do not read as zeros, as offsets relative to its start.</summary>
    private async Task<List<(int At, int Count, bool Zero)>> ZeroExtentsAsync(long start, int length)
    {
        var runs = new List<(int At, int Count, bool Zero)>();
        for (int at = 0; at < length;)
        {
            var s = await Export.Image.GetBlockStatusAsync(start + at, length - at).ConfigureAwait(false);
            int count = (int)s.Length;
            if (runs.Count > 0 && runs[^1].Zero == s.Zero) runs[^1] = runs[^1] with { Count = runs[^1].Count + count };
            else runs.Add((at, count, s.Zero));
            at += count;
        }
        return runs;
    }

    /// <summary>
    /// base:allocation as qemu-nbd reports it: HOLE when no layer stores data there (unallocated, or a zero
    /// cluster), ZERO when it reads as zeros. REQ_ONE stops after the first extent.
    /// </summary>
    private async Task<ReplyPieces> BlockStatusAsync(NbdRequest r)
    {
        long offset = (long)r.Offset, end = offset + r.Length;
        bool one = r.Flags.HasFlag(NbdCommandFlags.ReqOne);
        var extents = new List<(uint Length, NbdExtentFlags Flags)>();
        while (offset < end && extents.Count < MaxExtents)
        {
            var s = await Export.Image.GetBlockStatusAsync(offset, end - offset).ConfigureAwait(false);
            var flags = (s.Data ? 0 : NbdExtentFlags.Hole) | (s.Zero ? NbdExtentFlags.Zero : 0);
            if (extents.Count > 0 && extents[^1].Flags == flags) extents[^1] = (extents[^1].Length + (uint)s.Length, flags);
            else if (one && extents.Count == 1) break;
            else extents.Add(((uint)s.Length, flags));
            offset += s.Length;
        }
        var reply = new ReplyPieces(_buffers);
        var buffer = reply.Rent(NbdReplyWriter.ChunkHeaderSize + 4 + 8 * extents.Count);
        var b = buffer.Span;
        NbdReplyWriter.EncodeChunkHeader(b, NbdReplyFlags.Done, NbdReplyType.BlockStatus, r.Cookie, 4 + 8 * extents.Count);
        BinaryPrimitives.WriteUInt32BigEndian(b[NbdReplyWriter.ChunkHeaderSize..], NbdHandshake.BaseAllocationId);
        for (int i = 0; i < extents.Count; i++)
        {
            var at = b[(NbdReplyWriter.ChunkHeaderSize + 4 + 8 * i)..];
            BinaryPrimitives.WriteUInt32BigEndian(at, extents[i].Length);
            BinaryPrimitives.WriteUInt32BigEndian(at[4..], (uint)extents[i].Flags);
        }
        reply.Add(buffer);
        return reply;
    }

    /// <summary>The pieces of one reply, and the pooled buffers to give back once it is sent.</summary>
    private sealed class ReplyPieces(NbdBufferPool pool) : IDisposable
    {
        private readonly List<NbdBuffer> _rented = new();
        public List<ReadOnlyMemory<byte>> Pieces { get; } = new();

        public void Add(ReadOnlyMemory<byte> piece) => Pieces.Add(piece);

        public Memory<byte> Rent(int length)
        {
            var b = pool.Rent(length);
            _rented.Add(b);
            return b.Memory;
        }

        public void Dispose()
        {
            foreach (var b in _rented) pool.Return(b);
            _rented.Clear();
        }
    }
}
