using System.Buffers.Binary;
using System.Text;
using Vdisk.BlockIO;
using Vdisk.Formats.Raw;
using Vdisk.Nbd;
using Xunit;
using static Vdisk.Tests.Nbd.NbdTestClient;

namespace Vdisk.Tests.Nbd;

/// <summary>
/// Negotiation driven by hand-built client bytes: the whole client side is known in advance (the handshake is
/// strictly question and answer), and the server's output is decoded field by field.
/// </summary>
public sealed class NbdHandshakeTests : IDisposable
{
    private readonly RawImage _image = new(new MemoryBlockDevice(1 << 20), readOnly: false);
    private readonly Dictionary<string, NbdExport> _exports;

    public NbdHandshakeTests() => _exports = new() { ["exp"] = new NbdExport("exp", _image) { Description = "a test disk" } };

    public void Dispose() => _image.Dispose();

    private async Task<(NbdSession? Session, Exception? Error, ServerOutput Output)> Negotiate(params byte[][] client)
    {
        var stream = new ScriptedStream(client.SelectMany(b => b).ToArray());
        using var writer = new NbdReplyWriter(stream);
        try
        {
            var session = await NbdHandshake.NegotiateAsync(stream, writer, _exports, CancellationToken.None);
            return (session, null, new ServerOutput(stream.Written));
        }
        catch (Exception e) when (e is NbdProtocolException or EndOfStreamException)
        {
            return (null, e, new ServerOutput(stream.Written));
        }
    }

    [Fact]
    public async Task Greeting_is_fixed_newstyle_with_no_zeroes()
    {
        var (_, error, output) = await Negotiate(ClientFlags(3));
        Assert.IsType<EndOfStreamException>(error); // the script ran out: the server waited for an option
        var g = output.Take(18);
        Assert.Equal(NbdProtocol.NbdMagic, BinaryPrimitives.ReadUInt64BigEndian(g));
        Assert.Equal(NbdProtocol.IHaveOpt, BinaryPrimitives.ReadUInt64BigEndian(g.AsSpan(8)));
        Assert.Equal(3, BinaryPrimitives.ReadUInt16BigEndian(g.AsSpan(16)));
    }

    [Fact]
    public async Task Unknown_option_gets_err_unsup_and_negotiation_continues()
    {
        var (session, error, output) = await Negotiate(ClientFlags(1), Option((NbdOption)0x7654321, [1, 2, 3]),
            Option(NbdOption.Go, InfoPayload("exp", NbdInfo.Name, NbdInfo.Description)));
        Assert.Null(error);
        output.Take(18);
        var unsup = output.OptionReply();
        Assert.Equal((NbdOption)0x7654321, unsup.Option);
        Assert.Equal(NbdOptionReply.ErrUnsup, unsup.Type);
        var infos = output.InfosUntilAck(NbdOption.Go);
        Assert.Equal("exp", Encoding.UTF8.GetString(infos[NbdInfo.Name]));
        Assert.Equal("a test disk", Encoding.UTF8.GetString(infos[NbdInfo.Description]));
        Assert.Equal(1 << 20, BinaryPrimitives.ReadInt64BigEndian(infos[NbdInfo.Export]));
        var flags = (NbdTransmissionFlags)BinaryPrimitives.ReadUInt16BigEndian(infos[NbdInfo.Export].AsSpan(8));
        Assert.Equal(NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.SendFlush | NbdTransmissionFlags.SendFua | NbdTransmissionFlags.SendTrim
            | NbdTransmissionFlags.SendWriteZeroes | NbdTransmissionFlags.SendCache | NbdTransmissionFlags.SendFastZero, flags);
        var sizes = infos[NbdInfo.BlockSize];
        Assert.Equal([1u, 4096u, 32u << 20], [BinaryPrimitives.ReadUInt32BigEndian(sizes), BinaryPrimitives.ReadUInt32BigEndian(sizes.AsSpan(4)), BinaryPrimitives.ReadUInt32BigEndian(sizes.AsSpan(8))]);
        Assert.NotNull(session);
        Assert.False(session.Structured);
        Assert.Same(_exports["exp"], session.Export);
    }

    [Fact]
    public async Task Unknown_client_flag_drops_the_connection()
    {
        var (_, error, output) = await Negotiate(ClientFlags(1u << 31));
        Assert.IsType<NbdProtocolException>(error);
        Assert.Equal(18, output.Remaining); // nothing but the greeting
    }

    [Fact]
    public async Task Huge_option_length_drops_the_connection_without_reading_it()
    {
        var header = Option(NbdOption.Go, []);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(12), 0x7fffffff);
        var (_, error, _) = await Negotiate(ClientFlags(1), header);
        Assert.IsType<NbdProtocolException>(error);
    }

    [Fact]
    public async Task Overlong_name_is_err_invalid_and_unknown_export_is_err_unknown()
    {
        var (_, _, output) = await Negotiate(ClientFlags(1), Option(NbdOption.Go, InfoPayload(new string('a', 5000))),
            Option(NbdOption.Info, InfoPayload("nope")));
        output.Take(18);
        var tooLong = output.OptionReply();
        Assert.Equal(NbdOptionReply.ErrInvalid, tooLong.Type);
        Assert.Equal("Invalid name length: 5000", Encoding.UTF8.GetString(tooLong.Data));
        var unknown = output.OptionReply();
        Assert.Equal((NbdOption.Info, NbdOptionReply.ErrUnknown), (unknown.Option, unknown.Type));
        Assert.Equal("export 'nope' not present", Encoding.UTF8.GetString(unknown.Data));
    }

    [Fact]
    public async Task Info_with_a_request_count_that_overruns_the_payload_is_err_invalid()
    {
        var payload = InfoPayload("exp", NbdInfo.Name);
        BinaryPrimitives.WriteUInt16BigEndian(payload.AsSpan(4 + 3), 3); // claims three requests, carries one
        var (_, _, output) = await Negotiate(ClientFlags(1), Option(NbdOption.Info, payload));
        output.Take(18);
        Assert.Equal(NbdOptionReply.ErrInvalid, output.OptionReply().Type);
    }

    [Fact]
    public async Task List_names_the_export_then_acks_and_abort_acks_and_ends()
    {
        var (session, error, output) = await Negotiate(ClientFlags(1), Option(NbdOption.List, []), Option(NbdOption.Abort, []));
        Assert.Null(error);
        Assert.Null(session);
        output.Take(18);
        var server = output.OptionReply();
        Assert.Equal(NbdOptionReply.Server, server.Type);
        Assert.Equal(3u, BinaryPrimitives.ReadUInt32BigEndian(server.Data));
        Assert.Equal("exp", Encoding.UTF8.GetString(server.Data, 4, 3));
        Assert.Equal("a test disk", Encoding.UTF8.GetString(server.Data, 7, server.Data.Length - 7));
        Assert.Equal((NbdOption.List, NbdOptionReply.Ack), (output.OptionReply() is var a ? (a.Option, a.Type) : default));
        Assert.Equal((NbdOption.Abort, NbdOptionReply.Ack), (output.OptionReply() is var b ? (b.Option, b.Type) : default));
        Assert.Equal(0, output.Remaining);
    }

    [Theory]
    [InlineData(3u, 10)]
    [InlineData(1u, 134)]
    public async Task Export_name_answers_size_and_flags_with_or_without_zero_padding(uint clientFlags, int replyLength)
    {
        var (session, _, output) = await Negotiate(ClientFlags(clientFlags), Option(NbdOption.ExportName, Encoding.UTF8.GetBytes("exp")));
        Assert.NotNull(session);
        output.Take(18);
        Assert.Equal(replyLength, output.Remaining);
        var reply = output.Take(replyLength);
        Assert.Equal(1 << 20, BinaryPrimitives.ReadInt64BigEndian(reply));
        Assert.True(((NbdTransmissionFlags)BinaryPrimitives.ReadUInt16BigEndian(reply.AsSpan(8))).HasFlag(NbdTransmissionFlags.HasFlags));
    }

    [Fact]
    public async Task Export_name_for_an_unknown_export_can_only_disconnect()
    {
        var (_, error, _) = await Negotiate(ClientFlags(1), Option(NbdOption.ExportName, Encoding.UTF8.GetBytes("nope")));
        Assert.IsType<NbdProtocolException>(error);
    }

    [Fact]
    public async Task Meta_context_needs_structured_replies_then_selects_base_allocation()
    {
        var (session, _, output) = await Negotiate(ClientFlags(1),
            Option(NbdOption.SetMetaContext, MetaPayload("exp", NbdProtocol.BaseAllocation)),
            Option(NbdOption.StructuredReply, []),
            Option(NbdOption.ListMetaContext, MetaPayload("exp")),
            Option(NbdOption.SetMetaContext, MetaPayload("exp", "qemu:dirty-bitmap:x", NbdProtocol.BaseAllocation)),
            Option(NbdOption.Go, InfoPayload("exp")));
        output.Take(18);
        Assert.Equal(NbdOptionReply.ErrInvalid, output.OptionReply().Type);
        Assert.Equal(NbdOptionReply.Ack, output.OptionReply().Type);
        var listed = output.OptionReply();
        Assert.Equal(NbdOptionReply.MetaContext, listed.Type);
        Assert.Equal(NbdProtocol.BaseAllocation, Encoding.UTF8.GetString(listed.Data, 4, listed.Data.Length - 4));
        Assert.Equal(NbdOptionReply.Ack, output.OptionReply().Type);
        var set = output.OptionReply();
        Assert.Equal(NbdOptionReply.MetaContext, set.Type);
        Assert.Equal(NbdHandshake.BaseAllocationId, BinaryPrimitives.ReadUInt32BigEndian(set.Data));
        Assert.Equal(NbdOptionReply.Ack, output.OptionReply().Type);
        var infos = output.InfosUntilAck(NbdOption.Go);
        Assert.True(((NbdTransmissionFlags)BinaryPrimitives.ReadUInt16BigEndian(infos[NbdInfo.Export].AsSpan(8))).HasFlag(NbdTransmissionFlags.SendDf));
        Assert.NotNull(session);
        Assert.True(session.Structured);
        Assert.True(session.BaseAllocation);
    }

    /// <summary>Reads the server's bytes in order.</summary>
    private sealed class ServerOutput(byte[] bytes)
    {
        private int _at;
        public int Remaining => bytes.Length - _at;

        public byte[] Take(int n)
        {
            Assert.True(Remaining >= n, $"server sent {Remaining} more bytes, expected at least {n}");
            var b = bytes.AsSpan(_at, n).ToArray();
            _at += n;
            return b;
        }

        public (NbdOption Option, NbdOptionReply Type, byte[] Data) OptionReply()
        {
            var h = Take(20);
            Assert.Equal(NbdProtocol.OptionReplyMagic, BinaryPrimitives.ReadUInt64BigEndian(h));
            return ((NbdOption)BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(8)), (NbdOptionReply)BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(12)),
                Take((int)BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(16))));
        }

        public Dictionary<NbdInfo, byte[]> InfosUntilAck(NbdOption option)
        {
            var infos = new Dictionary<NbdInfo, byte[]>();
            while (true)
            {
                var (o, type, data) = OptionReply();
                Assert.Equal(option, o);
                if (type == NbdOptionReply.Ack) return infos;
                Assert.Equal(NbdOptionReply.Info, type);
                infos[(NbdInfo)BinaryPrimitives.ReadUInt16BigEndian(data)] = data[2..];
            }
        }
    }

    /// <summary>A stream whose reads replay a script and whose writes are recorded; reading past the script is end of stream.</summary>
    private sealed class ScriptedStream(byte[] script) : Stream
    {
        private readonly MemoryStream _in = new(script);
        private readonly MemoryStream _out = new();
        public byte[] Written => _out.ToArray();
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => _in.Read(buffer, offset, count);
        public override void Write(byte[] buffer, int offset, int count) => _out.Write(buffer, offset, count);
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
