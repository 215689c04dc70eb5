using System.Buffers.Binary;

namespace Vdisk.Formats.Qcow2.OnDisk;

/// <summary>
/// Reads and writes refcount entries of 1 to 64 bits inside a refcount block. Entries narrower than a byte are
/// packed with entry 0 in the least significant bits; wider ones are big-endian, like the rest of qcow2.
/// </summary>
public static class RefcountBlock
{
    public static ulong MaxValue(int order) => order == 6 ? ulong.MaxValue : (1UL << (1 << order)) - 1;

    public static ulong Get(ReadOnlySpan<byte> block, int order, int index) => order switch
    {
        0 or 1 or 2 => (ulong)(block[index >> (3 - order)] >> ((index << order) & 7)) & ((1UL << (1 << order)) - 1),
        3 => block[index],
        4 => BinaryPrimitives.ReadUInt16BigEndian(block[(index * 2)..]),
        5 => BinaryPrimitives.ReadUInt32BigEndian(block[(index * 4)..]),
        6 => BinaryPrimitives.ReadUInt64BigEndian(block[(index * 8)..]),
        _ => throw new ArgumentOutOfRangeException(nameof(order)),
    };

    public static void Set(Span<byte> block, int order, int index, ulong value)
    {
        switch (order)
        {
            case 0 or 1 or 2:
                int bits = 1 << order;
                int shift = (index << order) & 7;
                int mask = ((1 << bits) - 1) << shift;
                ref byte b = ref block[index >> (3 - order)];
                b = (byte)((b & ~mask) | (((int)value << shift) & mask));
                break;
            case 3: block[index] = (byte)value; break;
            case 4: BinaryPrimitives.WriteUInt16BigEndian(block[(index * 2)..], (ushort)value); break;
            case 5: BinaryPrimitives.WriteUInt32BigEndian(block[(index * 4)..], (uint)value); break;
            case 6: BinaryPrimitives.WriteUInt64BigEndian(block[(index * 8)..], value); break;
            default: throw new ArgumentOutOfRangeException(nameof(order));
        }
    }
}
