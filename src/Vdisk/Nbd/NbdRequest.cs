using System.Buffers.Binary;

namespace Vdisk.Nbd;

/// <summary>
/// A transmission-phase request header: magic, flags, type, cookie, offset and length (28 bytes), followed on
/// the wire by the payload for WRITE.
/// </summary>
public readonly record struct NbdRequest(uint Magic, NbdCommandFlags Flags, NbdCommand Command, ulong Cookie, ulong Offset, uint Length)
{
    public const int Size = 28;

    public static NbdRequest Parse(ReadOnlySpan<byte> b) => new(
        BinaryPrimitives.ReadUInt32BigEndian(b),
        (NbdCommandFlags)BinaryPrimitives.ReadUInt16BigEndian(b[4..]),
        (NbdCommand)BinaryPrimitives.ReadUInt16BigEndian(b[6..]),
        BinaryPrimitives.ReadUInt64BigEndian(b[8..]),
        BinaryPrimitives.ReadUInt64BigEndian(b[16..]),
        BinaryPrimitives.ReadUInt32BigEndian(b[24..]));

    public void WriteTo(Span<byte> b)
    {
        BinaryPrimitives.WriteUInt32BigEndian(b, Magic);
        BinaryPrimitives.WriteUInt16BigEndian(b[4..], (ushort)Flags);
        BinaryPrimitives.WriteUInt16BigEndian(b[6..], (ushort)Command);
        BinaryPrimitives.WriteUInt64BigEndian(b[8..], Cookie);
        BinaryPrimitives.WriteUInt64BigEndian(b[16..], Offset);
        BinaryPrimitives.WriteUInt32BigEndian(b[24..], Length);
    }

    /// <summary>True if [Offset, Offset+Length) lies within a disk of the given size (no overflow on huge offsets).</summary>
    public bool FitsIn(long size) => Offset <= (ulong)size && Length <= (ulong)size - Offset;
}
