using System.Buffers.Binary;
using System.Text;
using Vdisk.Nbd;
using Xunit;

namespace Vdisk.Tests.Nbd;

/// <summary>Byte layouts of requests and replies, checked against the offsets in the protocol spec.</summary>
public sealed class NbdEncodingTests
{
    [Fact]
    public void Request_header_fields_sit_at_the_spec_offsets()
    {
        var b = Convert.FromHexString("25609513" + "0011" + "0001" + "DEADBEEFCAFEF00D" + "0000000100000200" + "00010000");
        var r = NbdRequest.Parse(b);
        Assert.Equal(NbdProtocol.RequestMagic, r.Magic);
        Assert.Equal(NbdCommandFlags.Fua | NbdCommandFlags.FastZero, r.Flags);
        Assert.Equal(NbdCommand.Write, r.Command);
        Assert.Equal(0xDEADBEEFCAFEF00Dul, r.Cookie);
        Assert.Equal(0x100000200ul, r.Offset);
        Assert.Equal(0x10000u, r.Length);
        var back = new byte[NbdRequest.Size];
        r.WriteTo(back);
        Assert.Equal(b, back);
    }

    [Theory]
    [InlineData(0ul, 4096u, 4096L, true)]
    [InlineData(4096ul, 0u, 4096L, true)]
    [InlineData(4096ul, 1u, 4096L, false)]
    [InlineData(4097ul, 0u, 4096L, false)]
    [InlineData(ulong.MaxValue, 2u, 4096L, false)]   // offset + length would wrap
    [InlineData(1ul, uint.MaxValue, 4096L, false)]
    public void Fits_in_refuses_anything_past_the_end_without_overflowing(ulong offset, uint length, long size, bool fits)
        => Assert.Equal(fits, new NbdRequest(NbdProtocol.RequestMagic, 0, NbdCommand.Read, 0, offset, length).FitsIn(size));

    [Fact]
    public void Simple_reply_is_magic_error_cookie()
    {
        var b = new byte[16];
        NbdReplyWriter.EncodeSimpleReply(b, NbdError.Inval, 0x0102030405060708);
        Assert.Equal("67446698" + "00000016" + "0102030405060708", Convert.ToHexString(b));
    }

    [Fact]
    public void Error_chunk_carries_done_error_and_message()
    {
        var b = NbdReplyWriter.ErrorChunk(7, NbdError.Perm, "read-only");
        Assert.Equal("668E33EF" + "0001" + "8001" + "0000000000000007" + "0000000F", Convert.ToHexString(b, 0, 20));
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan(20)));
        Assert.Equal(9, BinaryPrimitives.ReadUInt16BigEndian(b.AsSpan(24)));
        Assert.Equal("read-only", Encoding.UTF8.GetString(b, 26, 9));
    }

    [Fact]
    public void Error_chunk_message_is_capped()
    {
        var b = NbdReplyWriter.ErrorChunk(1, NbdError.Io, new string('x', 10000));
        Assert.Equal(NbdProtocol.MaxStringLength, BinaryPrimitives.ReadUInt16BigEndian(b.AsSpan(24)));
        Assert.Equal(6 + NbdProtocol.MaxStringLength, (int)BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan(16)));
        Assert.Equal(20 + 6 + NbdProtocol.MaxStringLength, b.Length);
    }

    [Fact]
    public void Option_reply_header_is_magic_option_type_length()
    {
        var b = NbdReplyWriter.OptionReply(NbdOption.Go, NbdOptionReply.ErrUnknown, [0xaa]);
        Assert.Equal("0003E889045565A9" + "00000007" + "80000006" + "00000001" + "AA", Convert.ToHexString(b));
    }

    [Fact]
    public void Flags_are_qemu_nbds_for_a_writable_multi_connection_export()
    {
        using var image = new Vdisk.Formats.Raw.RawImage(new Vdisk.BlockIO.MemoryBlockDevice(4096), readOnly: false);
        var export = new NbdExport("", image) { MultiConn = true };
        Assert.Equal(0xd6d, (int)export.Flags(structured: false)); // qemu-nbd 7.2 --shared=8, reliability.md 3.2
        Assert.Equal(0xded, (int)export.Flags(structured: true));
        var ro = new NbdExport("", image) { ReadOnlyExport = true };
        Assert.Equal(NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.ReadOnly | NbdTransmissionFlags.SendFlush | NbdTransmissionFlags.SendFua
            | NbdTransmissionFlags.SendCache, ro.Flags(structured: false));
    }
}
