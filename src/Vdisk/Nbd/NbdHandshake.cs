using System.Buffers.Binary;
using System.Text;

namespace Vdisk.Nbd;

/// <summary>What negotiation settled: the export, whether replies are structured, and whether base:allocation is selected.</summary>
public sealed record NbdSession(NbdExport Export, bool Structured, bool BaseAllocation);

/// <summary>
/// The fixed-newstyle handshake and option haggling, up to the transmission phase. Returns the session, or null
/// when the client aborted; throws <see cref="NbdProtocolException"/> for anything that must end the connection.
/// </summary>
public sealed class NbdHandshake
{
    /// <summary>The id under which base:allocation is reported; any number works, clients echo what we said.</summary>
    public const uint BaseAllocationId = 1;

    private Stream _in;
    private NbdReplyWriter _out;
    private readonly IReadOnlyDictionary<string, NbdExport> _exports;
    private readonly NbdTls? _tls;
    private bool _fixed, _noZeroes, _structured, _encrypted;
    // The meta context selection belongs to the export it was set for; GO on another name clears it.
    private string? _contextExport;

    /// <summary>
    /// <paramref name="input"/> is read exactly as far as each option goes, never further: whatever a client
    /// sends after STARTTLS must reach the TLS layer, not linger in a plaintext buffer (nbdkit's CVE-2021-3716).
    /// </summary>
    public NbdHandshake(Stream input, NbdReplyWriter output, IReadOnlyDictionary<string, NbdExport> exports, NbdTls? tls = null)
    {
        _in = input;
        _out = output;
        _exports = exports;
        _tls = tls;
    }

    /// <summary>The stream the session continues on: the TLS stream once STARTTLS succeeded, else the one given.</summary>
    public Stream Transport => _in;

    /// <summary>The writer for that stream (a new one after STARTTLS; the handshake disposes the one it replaced).</summary>
    public NbdReplyWriter Output => _out;

    public static Task<NbdSession?> NegotiateAsync(Stream input, NbdReplyWriter output, IReadOnlyDictionary<string, NbdExport> exports, CancellationToken ct)
        => new NbdHandshake(input, output, exports).RunAsync(ct);

    public async Task<NbdSession?> RunAsync(CancellationToken ct)
    {
        var hello = new byte[18];
        BinaryPrimitives.WriteUInt64BigEndian(hello, NbdProtocol.NbdMagic);
        BinaryPrimitives.WriteUInt64BigEndian(hello.AsSpan(8), NbdProtocol.IHaveOpt);
        BinaryPrimitives.WriteUInt16BigEndian(hello.AsSpan(16), (ushort)(NbdHandshakeFlags.FixedNewstyle | NbdHandshakeFlags.NoZeroes));
        await _out.SendAsync(hello, ct).ConfigureAwait(false);

        var clientFlags = (NbdClientFlags)BinaryPrimitives.ReadUInt32BigEndian(await ReadAsync(4, ct).ConfigureAwait(false));
        // The spec leaves no room for guessing what an unknown client flag asks of us.
        if ((clientFlags & ~(NbdClientFlags.FixedNewstyle | NbdClientFlags.NoZeroes)) != 0)
            throw new NbdProtocolException($"Unsupported client flags 0x{(uint)clientFlags:x}");
        _fixed = clientFlags.HasFlag(NbdClientFlags.FixedNewstyle);
        _noZeroes = clientFlags.HasFlag(NbdClientFlags.NoZeroes);

        while (true)
        {
            var header = await ReadAsync(16, ct).ConfigureAwait(false);
            if (BinaryPrimitives.ReadUInt64BigEndian(header) != NbdProtocol.IHaveOpt)
                throw new NbdProtocolException("Bad option magic");
            var option = (NbdOption)BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(8));
            uint length = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12));
            if (length > NbdProtocol.MaxOptionLength)
                throw new NbdProtocolException($"Option {(uint)option} length {length} is too large");
            var data = await ReadAsync((int)length, ct).ConfigureAwait(false);
            if (_tls is not null && !_encrypted)
            {
                if (!await BeforeTlsAsync(option, data, ct).ConfigureAwait(false)) return null;
                continue;
            }
            switch (option)
            {
                case NbdOption.ExportName:
                    return await ExportNameAsync(data, ct).ConfigureAwait(false);
                case NbdOption.Abort:
                    if (_fixed) await TryAckAbortAsync(ct).ConfigureAwait(false);
                    return null;
                case NbdOption.List:
                    await ListAsync(data, ct).ConfigureAwait(false);
                    break;
                case NbdOption.Info or NbdOption.Go:
                    var session = await InfoOrGoAsync(option, data, ct).ConfigureAwait(false);
                    if (session is not null) return session;
                    break;
                case NbdOption.StructuredReply:
                    if (data.Length != 0) await InvalidAsync(option, "structured reply option takes no data", ct).ConfigureAwait(false);
                    else
                    {
                        _structured = true;
                        await Ack(option, ct).ConfigureAwait(false);
                    }
                    break;
                case NbdOption.ListMetaContext or NbdOption.SetMetaContext:
                    await MetaContextAsync(option, data, ct).ConfigureAwait(false);
                    break;
                case NbdOption.StartTls when _fixed:
                    // qemu-nbd's answers: a second STARTTLS is the client's mistake, one to a plaintext server is policy.
                    if (_encrypted) await InvalidAsync(option, "TLS already enabled", ct).ConfigureAwait(false);
                    else await _out.SendOptionErrorAsync(option, NbdOptionReply.ErrPolicy, "TLS not configured", ct).ConfigureAwait(false);
                    break;
                default:
                    // Only a fixed-newstyle client knows to expect an error reply; an old one must be dropped.
                    if (!_fixed) throw new NbdProtocolException($"Unsupported option {(uint)option}");
                    await _out.SendOptionErrorAsync(option, NbdOptionReply.ErrUnsup, $"Unsupported option {(uint)option}", ct).ConfigureAwait(false);
                    break;
            }
        }
    }

    /// <summary>
    /// FORCEDTLS before the upgrade: STARTTLS upgrades, ABORT leaves, EXPORT_NAME (which cannot be refused) hangs
    /// up, and everything else is told TLS is required. Returns false when the client is leaving.
    /// </summary>
    private async Task<bool> BeforeTlsAsync(NbdOption option, byte[] data, CancellationToken ct)
    {
        // STARTTLS needs fixed newstyle, so a client without it can never be served.
        if (!_fixed) throw new NbdProtocolException($"Unsupported option 0x{(uint)option:x}");
        switch (option)
        {
            case NbdOption.StartTls:
                // A STARTTLS with data is malformed; guessing where the TLS bytes start would be worse than hanging up.
                if (data.Length != 0) throw new NbdProtocolException("STARTTLS with data");
                await Ack(option, ct).ConfigureAwait(false);
                var ssl = await _tls!.AuthenticateAsync(_in, ct).ConfigureAwait(false);
                _out.Dispose();
                (_in, _out, _encrypted) = (ssl, new NbdReplyWriter(ssl), true);
                // Nothing agreed in plaintext survives the upgrade (nbdkit's CVE-2021-3716).
                (_structured, _contextExport) = (false, null);
                return true;
            case NbdOption.ExportName:
                throw new NbdProtocolException($"Option 0x{(uint)option:x} not permitted before TLS");
            case NbdOption.Abort:
                await TryAckAbortAsync(ct).ConfigureAwait(false);
                return false;
            default:
                await _out.SendOptionErrorAsync(option, NbdOptionReply.ErrTlsReqd, $"Option 0x{(uint)option:x} not permitted before TLS", ct).ConfigureAwait(false);
                return true;
        }
    }

    private async Task<NbdSession> ExportNameAsync(byte[] data, CancellationToken ct)
    {
        // EXPORT_NAME has no way to say no: an unknown name can only end the connection.
        string name = Encoding.UTF8.GetString(data);
        if (!_exports.TryGetValue(name, out var export)) throw new NbdProtocolException($"export '{name}' not present");
        var reply = new byte[_noZeroes ? 10 : 134];
        BinaryPrimitives.WriteInt64BigEndian(reply, export.Size);
        BinaryPrimitives.WriteUInt16BigEndian(reply.AsSpan(8), (ushort)export.Flags(_structured));
        await _out.SendAsync(reply, ct).ConfigureAwait(false);
        return new NbdSession(export, _structured, _contextExport == name);
    }

    private async Task TryAckAbortAsync(CancellationToken ct)
    {
        // The client may close as soon as it has sent ABORT; a failed ACK changes nothing.
        try { await Ack(NbdOption.Abort, ct).ConfigureAwait(false); }
        catch (IOException) { }
    }

    private async Task ListAsync(byte[] data, CancellationToken ct)
    {
        if (data.Length != 0)
        {
            await InvalidAsync(NbdOption.List, "list option takes no data", ct).ConfigureAwait(false);
            return;
        }
        foreach (var export in _exports.Values)
        {
            // What follows the name is free text; qemu-nbd puts the description there, and nbdinfo --list shows it.
            var name = Encoding.UTF8.GetBytes(export.Name);
            var description = Encoding.UTF8.GetBytes(export.Description);
            var reply = new byte[4 + name.Length + description.Length];
            BinaryPrimitives.WriteUInt32BigEndian(reply, (uint)name.Length);
            name.CopyTo(reply, 4);
            description.CopyTo(reply, 4 + name.Length);
            await _out.SendOptionReplyAsync(NbdOption.List, NbdOptionReply.Server, reply, ct).ConfigureAwait(false);
        }
        await Ack(NbdOption.List, ct).ConfigureAwait(false);
    }

    private async Task<NbdSession?> InfoOrGoAsync(NbdOption option, byte[] data, CancellationToken ct)
    {
        var reader = new OptionReader(data);
        if (!reader.TryReadString(out var name, out var problem) || !reader.TryReadUInt16(out ushort count)
            || reader.Remaining != count * 2)
        {
            await InvalidAsync(option, problem.Length > 0 ? problem : "Invalid length of information requests", ct).ConfigureAwait(false);
            return null;
        }
        var requested = new List<NbdInfo>();
        for (int i = 0; i < count; i++)
        {
            reader.TryReadUInt16(out ushort type);
            requested.Add((NbdInfo)type);
        }
        if (!_exports.TryGetValue(name, out var export))
        {
            await _out.SendOptionErrorAsync(option, NbdOptionReply.ErrUnknown, $"export '{name}' not present", ct).ConfigureAwait(false);
            return null;
        }
        if (requested.Contains(NbdInfo.Name)) await SendInfoAsync(option, NbdInfo.Name, Encoding.UTF8.GetBytes(export.Name), ct).ConfigureAwait(false);
        if (requested.Contains(NbdInfo.Description) && export.Description.Length > 0)
            await SendInfoAsync(option, NbdInfo.Description, Encoding.UTF8.GetBytes(export.Description), ct).ConfigureAwait(false);
        // Block sizes go out unasked too: a client that does not understand them ignores them, and min 1 binds no one.
        var sizes = new byte[12];
        BinaryPrimitives.WriteUInt32BigEndian(sizes, 1);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(4), NbdProtocol.PreferredBlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(8), NbdProtocol.MaxPayload);
        await SendInfoAsync(option, NbdInfo.BlockSize, sizes, ct).ConfigureAwait(false);
        var info = new byte[10];
        BinaryPrimitives.WriteInt64BigEndian(info, export.Size);
        BinaryPrimitives.WriteUInt16BigEndian(info.AsSpan(8), (ushort)export.Flags(_structured));
        await SendInfoAsync(option, NbdInfo.Export, info, ct).ConfigureAwait(false);
        await Ack(option, ct).ConfigureAwait(false);
        return option == NbdOption.Go ? new NbdSession(export, _structured, _contextExport == name) : null;
    }

    private async Task MetaContextAsync(NbdOption option, byte[] data, CancellationToken ct)
    {
        bool set = option == NbdOption.SetMetaContext;
        if (set) _contextExport = null;
        if (!_structured)
        {
            await InvalidAsync(option, "meta contexts need structured replies", ct).ConfigureAwait(false);
            return;
        }
        var reader = new OptionReader(data);
        if (!reader.TryReadString(out var name, out var problem) || !reader.TryReadUInt32(out uint count))
        {
            await InvalidAsync(option, problem.Length > 0 ? problem : "Truncated meta context request", ct).ConfigureAwait(false);
            return;
        }
        bool match = !set && count == 0; // LIST with no query lists everything
        for (uint i = 0; i < count; i++)
        {
            if (!reader.TryReadString(out var query, out problem))
            {
                await InvalidAsync(option, problem, ct).ConfigureAwait(false);
                return;
            }
            match |= query == NbdProtocol.BaseAllocation || (!set && query == "base:");
        }
        if (reader.Remaining != 0)
        {
            await InvalidAsync(option, "Trailing data in meta context request", ct).ConfigureAwait(false);
            return;
        }
        if (!_exports.ContainsKey(name))
        {
            await _out.SendOptionErrorAsync(option, NbdOptionReply.ErrUnknown, $"export '{name}' not present", ct).ConfigureAwait(false);
            return;
        }
        if (match)
        {
            var context = Encoding.ASCII.GetBytes(NbdProtocol.BaseAllocation);
            var reply = new byte[4 + context.Length];
            BinaryPrimitives.WriteUInt32BigEndian(reply, set ? BaseAllocationId : 0);
            context.CopyTo(reply, 4);
            await _out.SendOptionReplyAsync(option, NbdOptionReply.MetaContext, reply, ct).ConfigureAwait(false);
            if (set) _contextExport = name;
        }
        await Ack(option, ct).ConfigureAwait(false);
    }

    private ValueTask SendInfoAsync(NbdOption option, NbdInfo type, byte[] payload, CancellationToken ct)
    {
        var data = new byte[2 + payload.Length];
        BinaryPrimitives.WriteUInt16BigEndian(data, (ushort)type);
        payload.CopyTo(data, 2);
        return _out.SendOptionReplyAsync(option, NbdOptionReply.Info, data, ct);
    }

    private ValueTask Ack(NbdOption option, CancellationToken ct) => _out.SendOptionReplyAsync(option, NbdOptionReply.Ack, default, ct);

    private ValueTask InvalidAsync(NbdOption option, string message, CancellationToken ct)
        => _out.SendOptionErrorAsync(option, NbdOptionReply.ErrInvalid, message, ct);

    private async Task<byte[]> ReadAsync(int length, CancellationToken ct)
    {
        var buffer = new byte[length];
        await _in.ReadExactlyAsync(buffer, ct).ConfigureAwait(false);
        return buffer;
    }
}
