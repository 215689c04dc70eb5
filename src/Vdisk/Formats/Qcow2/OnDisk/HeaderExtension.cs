using System.Buffers.Binary;
using System.Text;

namespace Vdisk.Formats.Qcow2.OnDisk;

/// <summary>A header extension: type, then data padded to 8 bytes. Unknown types are kept byte for byte.</summary>
public sealed record HeaderExtension(uint Type, byte[] Data)
{
    public const uint End = 0x00000000;
    public const uint BackingFormat = 0xE2792ACA;
    public const uint FeatureNameTable = 0x6803F857;
    public const uint Bitmaps = 0x23852875;
    public const uint FullDiskEncryption = 0x0537BE77;
    public const uint ExternalDataFile = 0x44415441;

    public int PaddedSize => 8 + ((Data.Length + 7) & ~7);

    public static HeaderExtension Text(uint type, string text) => new(type, Encoding.UTF8.GetBytes(text));

    public static HeaderExtension FeatureTable()
    {
        var data = new byte[FeatureNames.Table.Length * FeatureNames.EntrySize];
        for (int i = 0; i < FeatureNames.Table.Length; i++)
        {
            var (type, bit, name) = FeatureNames.Table[i];
            var entry = data.AsSpan(i * FeatureNames.EntrySize, FeatureNames.EntrySize);
            entry[0] = type;
            entry[1] = bit;
            Encoding.ASCII.GetBytes(name, entry[2..]);
        }
        return new HeaderExtension(FeatureNameTable, data);
    }

    public int WriteTo(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, Type);
        BinaryPrimitives.WriteUInt32BigEndian(destination[4..], (uint)Data.Length);
        Data.CopyTo(destination[8..]);
        destination.Slice(8 + Data.Length, PaddedSize - 8 - Data.Length).Clear();
        return PaddedSize;
    }
}
