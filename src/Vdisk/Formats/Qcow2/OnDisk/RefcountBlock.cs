using System.Buffers.Binary;
using System.Runtime.InteropServices;

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
    /// <summary>Entries in a block of <paramref name="blockBytes"/> bytes.</summary>
    public static int EntryCount(int blockBytes, int order) => (blockBytes * 8) >> order;

    /// <summary>
    /// The first index at or after <paramref name="from"/> whose entry is zero (<paramref name="zero"/>) or non-zero,
    /// or -1. A zero entry is zero in either byte order, so whole-width entries are searched as native integers.
    /// </summary>
    public static int IndexOf(ReadOnlySpan<byte> block, int order, int from, bool zero)
    {
        int found = order switch
        {
            3 => zero ? block[from..].IndexOf((byte)0) : block[from..].IndexOfAnyExcept((byte)0),
            4 => zero ? MemoryMarshal.Cast<byte, ushort>(block)[from..].IndexOf((ushort)0)
                      : MemoryMarshal.Cast<byte, ushort>(block)[from..].IndexOfAnyExcept((ushort)0),
            5 => zero ? MemoryMarshal.Cast<byte, uint>(block)[from..].IndexOf(0u)
                      : MemoryMarshal.Cast<byte, uint>(block)[from..].IndexOfAnyExcept(0u),
            6 => zero ? MemoryMarshal.Cast<byte, ulong>(block)[from..].IndexOf(0ul)
                      : MemoryMarshal.Cast<byte, ulong>(block)[from..].IndexOfAnyExcept(0ul),
            _ => IndexOfPacked(block, order, from, zero),
        };
        return found < 0 ? -1 : (order is >= 3 and <= 6 ? from + found : found);
    }

    private static int IndexOfPacked(ReadOnlySpan<byte> block, int order, int from, bool zero)
    {
        int entries = EntryCount(block.Length, order);
        for (int i = from; i < entries; i++)
            if ((Get(block, order, i) == 0) == zero) return i;
        return -1;
    }
}
