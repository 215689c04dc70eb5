using System.Buffers.Binary;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;
using Vdisk.Nbd;

namespace Vdisk.Tests.Nbd;

/// <summary>One reply off the wire: a simple reply (Type is null) or one structured chunk.</summary>
public sealed record NbdTestReply(ulong Cookie, uint Error, NbdReplyType? Type = null, NbdReplyFlags Flags = 0, byte[]? Data = null)
{
    public bool Done => Type is null || Flags.HasFlag(NbdReplyFlags.Done);
    /// <summary>The error of an ERROR chunk, or of a simple reply.</summary>
    public uint ErrorCode => Type is NbdReplyType.Error or NbdReplyType.ErrorOffset ? BinaryPrimitives.ReadUInt32BigEndian(Data) : Error;
}

/// <summary>
/// A deliberately low-level NBD client for tests: it sends exactly the bytes it is told to, so tests can also
/// send what a well-behaved client never would. Written from the protocol spec, independent of the server code
/// except for the shared constants.
/// </summary>
public sealed class NbdTestClient : IAsyncDisposable
{
    private readonly Socket _socket;
    private Stream _stream;

    private NbdTestClient(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
    }

    public static async Task<NbdTestClient> ConnectAsync(EndPoint endPoint)
    {
        var socket = endPoint is UnixDomainSocketEndPoint
            ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
            : new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(endPoint);
        return new NbdTestClient(socket);
    }

    /// <summary>The client side of STARTTLS, once the server has acked it; any server certificate is accepted.</summary>
    public async Task UpgradeToTlsAsync(System.Security.Cryptography.X509Certificates.X509Certificate2? clientCertificate = null)
    {
        var ssl = new SslStream(_stream, leaveInnerStreamOpen: false);
        using var cts = new CancellationTokenSource(20000);
        await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "localhost",
            RemoteCertificateValidationCallback = (_, _, _, _) => true,
            ClientCertificates = clientCertificate is null ? null : [clientCertificate],
        }, cts.Token);
        _stream = ssl;
    }

    public Task SendAsync(byte[] bytes) => _stream.WriteAsync(bytes).AsTask();

    public async Task<byte[]> ReceiveAsync(int length, int timeoutMs = 20000)
    {
        var b = new byte[length];
        using var cts = new CancellationTokenSource(timeoutMs);
        await _stream.ReadExactlyAsync(b, cts.Token);
        return b;
    }

    /// <summary>True if the server closes the connection within the timeout (anything it still sends is skipped).</summary>
    public async Task<bool> ClosedWithinAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        var sink = new byte[4096];
        try
        {
            while (await _stream.ReadAsync(sink, cts.Token) > 0) { }
            return true;
        }
        catch (OperationCanceledException) { return false; }
        catch (IOException) { return true; }
    }

    // ---- handshake ----
    public static byte[] Option(NbdOption option, byte[] data)
    {
        var b = new byte[16 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(b, NbdProtocol.IHaveOpt);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(8), (uint)option);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(12), (uint)data.Length);
        data.CopyTo(b, 16);
        return b;
    }

    public static byte[] InfoPayload(string name, params NbdInfo[] requests)
    {
        var n = Encoding.UTF8.GetBytes(name);
        var b = new byte[4 + n.Length + 2 + 2 * requests.Length];
        BinaryPrimitives.WriteUInt32BigEndian(b, (uint)n.Length);
        n.CopyTo(b, 4);
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(4 + n.Length), (ushort)requests.Length);
        for (int i = 0; i < requests.Length; i++) BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(6 + n.Length + 2 * i), (ushort)requests[i]);
        return b;
    }

    public static byte[] MetaPayload(string name, params string[] queries)
    {
        var parts = new List<byte>();
        void Str(string s)
        {
            var bytes = Encoding.UTF8.GetBytes(s);
            var len = new byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(len, (uint)bytes.Length);
            parts.AddRange(len);
            parts.AddRange(bytes);
        }
        Str(name);
        var count = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(count, (uint)queries.Length);
        parts.AddRange(count);
        foreach (var q in queries) Str(q);
        return parts.ToArray();
    }

    public static byte[] ClientFlags(uint flags)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, flags);
        return b;
    }

    public async Task<(NbdOption Option, NbdOptionReply Type, byte[] Data)> ReadOptionReplyAsync()
    {
        var h = await ReceiveAsync(20);
        if (BinaryPrimitives.ReadUInt64BigEndian(h) != NbdProtocol.OptionReplyMagic) throw new InvalidDataException("bad option reply magic");
        var data = await ReceiveAsync((int)BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(16)));
        return ((NbdOption)BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(8)), (NbdOptionReply)BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(12)), data);
    }

    /// <summary>The usual negotiation: greeting, flags, optionally structured replies and base:allocation, then GO.</summary>
    public async Task<(long Size, NbdTransmissionFlags Flags)> NegotiateAsync(string export, bool structured = true, bool baseAllocation = true)
    {
        var greeting = await ReceiveAsync(18);
        if (BinaryPrimitives.ReadUInt64BigEndian(greeting) != NbdProtocol.NbdMagic) throw new InvalidDataException("bad greeting");
        await SendAsync(ClientFlags(3));
        return await NegotiateAfterGreetingAsync(export, structured, baseAllocation);
    }

    /// <summary>The options of <see cref="NegotiateAsync"/>, for a client already past the greeting (or STARTTLS).</summary>
    public async Task<(long Size, NbdTransmissionFlags Flags)> NegotiateAfterGreetingAsync(string export, bool structured = true, bool baseAllocation = true)
    {
        if (structured)
        {
            await SendAsync(Option(NbdOption.StructuredReply, []));
            if ((await ReadOptionReplyAsync()).Type != NbdOptionReply.Ack) throw new InvalidDataException("structured replies refused");
        }
        if (baseAllocation)
        {
            await SendAsync(Option(NbdOption.SetMetaContext, MetaPayload(export, NbdProtocol.BaseAllocation)));
            while ((await ReadOptionReplyAsync()).Type != NbdOptionReply.Ack) { }
        }
        await SendAsync(Option(NbdOption.Go, InfoPayload(export)));
        long size = -1;
        var flags = (NbdTransmissionFlags)0;
        while (true)
        {
            var (_, type, data) = await ReadOptionReplyAsync();
            if (type == NbdOptionReply.Ack) return (size, flags);
            if (type != NbdOptionReply.Info) throw new InvalidDataException($"GO failed: {type} {Encoding.UTF8.GetString(data)}");
            if ((NbdInfo)BinaryPrimitives.ReadUInt16BigEndian(data) == NbdInfo.Export)
            {
                size = BinaryPrimitives.ReadInt64BigEndian(data.AsSpan(2));
                flags = (NbdTransmissionFlags)BinaryPrimitives.ReadUInt16BigEndian(data.AsSpan(10));
            }
        }
    }

    // ---- transmission ----
    public static byte[] Request(NbdCommand command, ulong cookie, ulong offset, uint length, NbdCommandFlags flags = 0, byte[]? payload = null)
    {
        var b = new byte[NbdRequest.Size + (payload?.Length ?? 0)];
        new NbdRequest(NbdProtocol.RequestMagic, flags, command, cookie, offset, length).WriteTo(b);
        payload?.CopyTo(b, NbdRequest.Size);
        return b;
    }

    public Task SendRequestAsync(NbdCommand command, ulong cookie, ulong offset, uint length, NbdCommandFlags flags = 0, byte[]? payload = null)
        => SendAsync(Request(command, cookie, offset, length, flags, payload));

    /// <summary>Reads one simple reply (with <paramref name="simpleReadLength"/> bytes of data if it is a successful READ) or one chunk.</summary>
    public async Task<NbdTestReply> ReadReplyAsync(Func<ulong, int>? simpleReadLength = null)
    {
        var magic = BinaryPrimitives.ReadUInt32BigEndian(await ReceiveAsync(4));
        if (magic == NbdProtocol.SimpleReplyMagic)
        {
            var h = await ReceiveAsync(12);
            uint error = BinaryPrimitives.ReadUInt32BigEndian(h);
            ulong cookie = BinaryPrimitives.ReadUInt64BigEndian(h.AsSpan(4));
            int n = error == 0 ? simpleReadLength?.Invoke(cookie) ?? 0 : 0;
            return new NbdTestReply(cookie, error, Data: n > 0 ? await ReceiveAsync(n) : []);
        }
        if (magic != NbdProtocol.StructuredReplyMagic) throw new InvalidDataException($"bad reply magic 0x{magic:x8}");
        var c = await ReceiveAsync(16);
        var data = await ReceiveAsync((int)BinaryPrimitives.ReadUInt32BigEndian(c.AsSpan(12)));
        return new NbdTestReply(BinaryPrimitives.ReadUInt64BigEndian(c.AsSpan(4)), 0,
            (NbdReplyType)BinaryPrimitives.ReadUInt16BigEndian(c.AsSpan(2)), (NbdReplyFlags)BinaryPrimitives.ReadUInt16BigEndian(c), data);
    }

    /// <summary>Applies one chunk of a structured READ to <paramref name="target"/> (which starts at <paramref name="start"/>); returns the error, if any.</summary>
    public static uint ApplyReadChunk(NbdTestReply chunk, long start, Span<byte> target)
    {
        switch (chunk.Type)
        {
            case NbdReplyType.OffsetData:
                long at = BinaryPrimitives.ReadInt64BigEndian(chunk.Data) - start;
                chunk.Data.AsSpan(8).CopyTo(target[(int)at..]);
                return 0;
            case NbdReplyType.OffsetHole:
                long hole = BinaryPrimitives.ReadInt64BigEndian(chunk.Data) - start;
                target.Slice((int)hole, (int)BinaryPrimitives.ReadUInt32BigEndian(chunk.Data.AsSpan(8))).Clear();
                return 0;
            case NbdReplyType.None: return 0;
            default: return chunk.ErrorCode;
        }
    }

    public async ValueTask DisposeAsync()
    {
        try { _socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
        await _stream.DisposeAsync();
    }
}
