using System.Buffers.Binary;
using System.Text;

namespace Vdisk.Nbd;

/// <summary>
/// Everything the server sends, encoded big-endian, and written under one lock so that the chunks of one reply
/// never interleave with another reply's. Replies are buffered; a reply is flushed unless another one is already
/// waiting for the lock, which then flushes both: under load many small replies leave in one send.
/// </summary>
public sealed class NbdReplyWriter : IDisposable
{
    public const int SimpleReplySize = 16;
    public const int ChunkHeaderSize = 20;
    public const int OptionReplyHeaderSize = 20;

    private readonly Stream _out;
    private readonly SemaphoreSlim _lock = new(1, 1);
    // Replies waiting for the lock or being written. Only the last of them flushes. A sender cancelled while
    // waiting leaves the others' bytes unflushed, but cancellation means the connection is being torn down.
    private int _senders;

    public NbdReplyWriter(Stream stream) => _out = new BufferedStream(stream, 64 << 10);

    // ---- encodings, kept separate from I/O so tests can check the bytes ----
    public static void EncodeSimpleReply(Span<byte> b, NbdError error, ulong cookie)
    {
        BinaryPrimitives.WriteUInt32BigEndian(b, NbdProtocol.SimpleReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(b[4..], (uint)error);
        BinaryPrimitives.WriteUInt64BigEndian(b[8..], cookie);
    }

    public static void EncodeChunkHeader(Span<byte> b, NbdReplyFlags flags, NbdReplyType type, ulong cookie, int length)
    {
        BinaryPrimitives.WriteUInt32BigEndian(b, NbdProtocol.StructuredReplyMagic);
        BinaryPrimitives.WriteUInt16BigEndian(b[4..], (ushort)flags);
        BinaryPrimitives.WriteUInt16BigEndian(b[6..], (ushort)type);
        BinaryPrimitives.WriteUInt64BigEndian(b[8..], cookie);
        BinaryPrimitives.WriteUInt32BigEndian(b[16..], (uint)length);
    }

    public static void EncodeOptionReplyHeader(Span<byte> b, NbdOption option, NbdOptionReply type, int length)
    {
        BinaryPrimitives.WriteUInt64BigEndian(b, NbdProtocol.OptionReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(b[8..], (uint)option);
        BinaryPrimitives.WriteUInt32BigEndian(b[12..], (uint)type);
        BinaryPrimitives.WriteUInt32BigEndian(b[16..], (uint)length);
    }

    /// <summary>An ERROR chunk: error, message length, message (UTF-8, cut at 4096 bytes as a message must stay short).</summary>
    public static byte[] ErrorChunk(ulong cookie, NbdError error, string message)
    {
        var text = Encoding.UTF8.GetBytes(message);
        int n = Math.Min(text.Length, NbdProtocol.MaxStringLength);
        var b = new byte[ChunkHeaderSize + 6 + n];
        EncodeChunkHeader(b, NbdReplyFlags.Done, NbdReplyType.Error, cookie, 6 + n);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(ChunkHeaderSize), (uint)error);
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(ChunkHeaderSize + 4), (ushort)n);
        text.AsSpan(0, n).CopyTo(b.AsSpan(ChunkHeaderSize + 6));
        return b;
    }

    public static byte[] OptionReply(NbdOption option, NbdOptionReply type, ReadOnlySpan<byte> data)
    {
        var b = new byte[OptionReplyHeaderSize + data.Length];
        EncodeOptionReplyHeader(b, option, type, data.Length);
        data.CopyTo(b.AsSpan(OptionReplyHeaderSize));
        return b;
    }

    // ---- sending ----
    public ValueTask SendAsync(ReadOnlyMemory<byte> reply, CancellationToken ct = default) => SendAsync(reply, default, ct);

    public async ValueTask SendAsync(ReadOnlyMemory<byte> first, ReadOnlyMemory<byte> second, CancellationToken ct = default)
    {
        await EnterAsync(ct).ConfigureAwait(false);
        bool counted = true;
        try
        {
            await _out.WriteAsync(first, ct).ConfigureAwait(false);
            if (!second.IsEmpty) await _out.WriteAsync(second, ct).ConfigureAwait(false);
            counted = false;
            await FlushUnlessOthersWaitAsync(ct).ConfigureAwait(false);
        }
        finally { Leave(counted); }
    }

    /// <summary>Sends several pieces as one reply (the chunks of a structured READ), none interleaved with other replies.</summary>
    public async ValueTask SendAsync(IReadOnlyList<ReadOnlyMemory<byte>> pieces, CancellationToken ct = default)
    {
        await EnterAsync(ct).ConfigureAwait(false);
        bool counted = true;
        try
        {
            foreach (var piece in pieces) await _out.WriteAsync(piece, ct).ConfigureAwait(false);
            counted = false;
            await FlushUnlessOthersWaitAsync(ct).ConfigureAwait(false);
        }
        finally { Leave(counted); }
    }

    private async ValueTask EnterAsync(CancellationToken ct)
    {
        Interlocked.Increment(ref _senders);
        try { await _lock.WaitAsync(ct).ConfigureAwait(false); }
        catch
        {
            Interlocked.Decrement(ref _senders);
            throw;
        }
    }

    private ValueTask FlushUnlessOthersWaitAsync(CancellationToken ct) =>
        Interlocked.Decrement(ref _senders) == 0 ? new ValueTask(_out.FlushAsync(ct)) : ValueTask.CompletedTask;

    private void Leave(bool stillCounted)
    {
        if (stillCounted) Interlocked.Decrement(ref _senders);
        _lock.Release();
    }

    public ValueTask SendOptionReplyAsync(NbdOption option, NbdOptionReply type, ReadOnlySpan<byte> data, CancellationToken ct)
        => SendAsync(OptionReply(option, type, data), ct);

    public ValueTask SendOptionErrorAsync(NbdOption option, NbdOptionReply type, string message, CancellationToken ct)
        => SendOptionReplyAsync(option, type, Encoding.UTF8.GetBytes(message), ct);

    public void Dispose() => _lock.Dispose();
}
