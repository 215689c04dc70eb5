using System.Buffers.Binary;
using System.Text;

namespace Vdisk.Formats.Foreign;

/// <summary>
/// The signatures of every format qemu-img 7.2 probes besides qcow2 and raw, with the scores its probes give, written
/// from the formats' own documentation and checked against images qemu-img creates (tests/…/ForeignFormatTests).
/// </summary>
public static class ForeignFormats
{
    public static IReadOnlyList<ForeignFormat> All { get; } = new[]
    {
        new ForeignFormat("vmdk", "VMware VMDK", ProbeVmdk),
        new ForeignFormat("vdi", "VirtualBox VDI", (h, _) => h.Length >= VdiHeaderSize && BinaryPrimitives.ReadUInt32LittleEndian(h[VdiSignatureOffset..]) == VdiSignature ? 100 : 0),
        new ForeignFormat("vpc", "Microsoft VHD", (h, _) => StartsWith(h, "conectix") ? 100 : 0),
        new ForeignFormat("vhdx", "Microsoft VHDX", (h, _) => StartsWith(h, "vhdxfile") ? 100 : 0),
        new ForeignFormat("qcow", "QEMU qcow version 1", (h, _) => h.Length >= 8 && BinaryPrimitives.ReadUInt32BigEndian(h) == QcowMagic && BinaryPrimitives.ReadUInt32BigEndian(h[4..]) == 1 ? 100 : 0),
        new ForeignFormat("qed", "QEMU QED", (h, _) => h.Length >= QedHeaderSize && BinaryPrimitives.ReadUInt32LittleEndian(h) == QedMagic ? 100 : 0),
        new ForeignFormat("luks", "LUKS encrypted", (h, _) => h.Length >= LuksCipherNameOffset && h[..6].SequenceEqual(LuksMagic) && BinaryPrimitives.ReadUInt16BigEndian(h[6..]) == 1 ? 100 : 0),
        new ForeignFormat("parallels", "Parallels", ProbeParallels),
        new ForeignFormat("bochs", "Bochs", ProbeBochs),
        new ForeignFormat("cloop", "cloop compressed loop", (h, _) => StartsWith(h, CloopScript) ? 2 : 0),
        // QEMU's dmg probe looks at the file name only: a ".dmg" file is a disk image for it, whatever it holds.
        new ForeignFormat("dmg", "Apple DMG", (_, path) => path is { Length: > 4 } p && p.EndsWith(".dmg", StringComparison.Ordinal) ? 2 : 0),
    };

    // VDI: a 64-byte text line, then the signature; QEMU wants the whole pre-header and header (512 bytes) present.
    private const int VdiSignatureOffset = 0x40, VdiHeaderSize = 512;
    private const uint VdiSignature = 0xbeda107f;
    private const uint QcowMagic = 0x514649fb; // "QFI\xfb", shared with qcow2, which has version 2 or 3
    private const uint QedMagic = 0x00444551;  // "QED\0", little-endian
    private const int QedHeaderSize = 64;
    private static ReadOnlySpan<byte> LuksMagic => [(byte)'L', (byte)'U', (byte)'K', (byte)'S', 0xba, 0xbe];
    private const int LuksCipherNameOffset = 8;
    private const string CloopScript = "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n";

    /// <summary>Sparse extents start with "KDMV" (VMDK 4) or "COWD" (VMDK 3); a descriptor is a text file whose first line after comments and blanks is "version=1|2|3".</summary>
    private static int ProbeVmdk(ReadOnlySpan<byte> h, string? path)
    {
        if (StartsWith(h, "KDMV") || StartsWith(h, "COWD")) return 100;
        int p = 0;
        while (p < h.Length)
        {
            if (h[p] == (byte)'#')
            {
                int newline = h[p..].IndexOf((byte)'\n');
                if (newline < 0) return 0;
                p += newline + 1;
                continue;
            }
            if (h[p] == (byte)' ')
            {
                while (p < h.Length && h[p] == (byte)' ') p++;
                if (p < h.Length && h[p] == (byte)'\r') p++;
                if (p == h.Length || h[p] != (byte)'\n') return 0; // only blank lines may come before "version="
                p++;
                continue;
            }
            var line = h[p..];
            foreach (var version in new[] { "version=1", "version=2", "version=3" })
                if (StartsWith(line, version + "\n") || StartsWith(line, version + "\r\n")) return 100;
            return 0;
        }
        return 0;
    }

    /// <summary>"WithoutFreeSpace" or "WithouFreSpacExt", then version 2 (little-endian) at offset 16, in a 64-byte header.</summary>
    private static int ProbeParallels(ReadOnlySpan<byte> h, string? path)
    {
        if (h.Length < 64) return 0;
        bool magic = StartsWith(h, "WithoutFreeSpace") || StartsWith(h, "WithouFreSpacExt");
        return magic && BinaryPrimitives.ReadUInt32LittleEndian(h[16..]) == 2 ? 100 : 0;
    }

    /// <summary>A 512-byte header: three NUL-terminated strings (magic, type, subtype) in 32/16/16-byte fields, then the version.</summary>
    private static int ProbeBochs(ReadOnlySpan<byte> h, string? path)
    {
        if (h.Length < 512) return 0;
        bool strings = CString(h[..32], "Bochs Virtual HD Image") && CString(h[32..48], "Redolog") && CString(h[48..64], "Growing");
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(h[64..]);
        return strings && version is 0x00020000 or 0x00010000 ? 100 : 0;
    }

    private static bool StartsWith(ReadOnlySpan<byte> h, string ascii)
        => h.Length >= ascii.Length && h[..ascii.Length].SequenceEqual(Encoding.ASCII.GetBytes(ascii));

    private static bool CString(ReadOnlySpan<byte> field, string expected)
    {
        int end = field.IndexOf((byte)0);
        return end >= 0 && field[..end].SequenceEqual(Encoding.ASCII.GetBytes(expected));
    }
}
