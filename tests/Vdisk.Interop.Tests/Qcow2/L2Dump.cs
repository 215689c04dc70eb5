using System.Buffers.Binary;

namespace Vdisk.Interop.Tests.Qcow2;

/// <summary>
/// The L2 entries of a qcow2 file as written on disk, read without Vdisk's driver, so that two files can be compared
/// entry by entry: flags and subcluster bitmap always, the host offset only on request (allocators may differ).
/// </summary>
public static class L2Dump
{
    /// <summary>One line per guest cluster whose entry is not empty: "guest: flags bitmap [host]".</summary>
    public static List<string> Entries(string path, bool withHostOffsets = false)
    {
        var file = File.ReadAllBytes(path);
        var h = file.AsSpan();
        uint version = BinaryPrimitives.ReadUInt32BigEndian(h[4..]);
        int clusterBits = (int)BinaryPrimitives.ReadUInt32BigEndian(h[20..]);
        long size = (long)BinaryPrimitives.ReadUInt64BigEndian(h[24..]);
        int l1Size = (int)BinaryPrimitives.ReadUInt32BigEndian(h[36..]);
        long l1Offset = (long)BinaryPrimitives.ReadUInt64BigEndian(h[40..]);
        bool extended = version >= 3 && (BinaryPrimitives.ReadUInt64BigEndian(h[72..]) & 16) != 0;
        int clusterSize = 1 << clusterBits, entrySize = extended ? 16 : 8, perTable = clusterSize / entrySize;
        const ulong offsetMask = 0x00FFFFFFFFFFFE00UL;
        var lines = new List<string>();
        for (int i = 0; i < l1Size; i++)
        {
            long l2 = (long)(BinaryPrimitives.ReadUInt64BigEndian(h[(int)(l1Offset + 8 * i)..]) & offsetMask);
            if (l2 == 0) continue;
            for (int j = 0; j < perTable; j++)
            {
                long guest = ((long)i * perTable + j) << clusterBits;
                if (guest >= size) break;
                var e = h[(int)(l2 + (long)j * entrySize)..];
                ulong raw = BinaryPrimitives.ReadUInt64BigEndian(e);
                ulong bitmap = extended ? BinaryPrimitives.ReadUInt64BigEndian(e[8..]) : 0;
                if (raw == 0 && bitmap == 0) continue;
                ulong host = raw & offsetMask;
                string where = host == 0 ? "no host" : withHostOffsets ? $"host 0x{host:x}" : "host";
                lines.Add($"{guest}: flags 0x{raw & ~offsetMask:x} bitmap 0x{bitmap:x16} {where}");
            }
        }
        return lines;
    }
}
