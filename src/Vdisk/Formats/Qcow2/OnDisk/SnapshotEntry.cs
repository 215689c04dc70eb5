using System.Buffers.Binary;
using System.Text;
using Vdisk.Images;

namespace Vdisk.Formats.Qcow2.OnDisk;

/// <summary>Byte offsets inside one snapshot table entry (big-endian), from the qcow2 specification.</summary>
public static class SnapshotField
{
    public const int L1TableOffset = 0, L1Size = 8, IdLength = 12, NameLength = 14, DateSeconds = 16, DateNanoseconds = 20,
        VmClockNanoseconds = 24, VmStateSize = 32, ExtraDataSize = 36, FixedLength = 40;

    /// <summary>Offsets inside the extra data, and the length of the part we understand.</summary>
    public const int ExtraVmStateSizeLarge = 0, ExtraDiskSize = 8, ExtraIcount = 16, KnownExtraLength = 24;

    /// <summary>v3 requires extra data up to and including disk_size.</summary>
    public const int V3MinExtraLength = 16;

    /// <summary>QEMU's QCOW_MAX_SNAPSHOT_EXTRA_DATA.</summary>
    public const int MaxExtraLength = 1024;
}

/// <summary>One internal snapshot as the snapshot table stores it.</summary>
public sealed class SnapshotEntry
{
    public long L1TableOffset { get; set; }
    public uint L1Size { get; set; }
    public string Id { get; set; } = "";
    public string Name { get; set; } = "";
    public uint DateSeconds { get; set; }
    public uint DateNanoseconds { get; set; }
    public ulong VmClockNanoseconds { get; set; }
    /// <summary>Bytes of VM state; the 64-bit extra field when present, the 32-bit one otherwise.</summary>
    public long VmStateSize { get; set; }
    /// <summary>Virtual disk size when the snapshot was taken (the image's size when the entry does not record it).</summary>
    public long DiskSize { get; set; }
    /// <summary>Record/replay instruction count; -1 when not recorded.</summary>
    public long Icount { get; set; } = -1;
    /// <summary>Extra data past the fields we know, kept byte for byte when the table is rewritten.</summary>
    public byte[] UnknownExtra { get; set; } = Array.Empty<byte>();

    /// <summary>Bytes this entry occupies when written (always with our 24 bytes of extra data), padded to 8.</summary>
    public int SerializedLength =>
        (SnapshotField.FixedLength + SnapshotField.KnownExtraLength + UnknownExtra.Length + Encoding.UTF8.GetByteCount(Id)
         + Encoding.UTF8.GetByteCount(Name) + 7) & ~7;

    /// <summary>
    /// Parses the entry at the start of <paramref name="data"/>, returning it and its padded length (which may
    /// exceed <paramref name="data"/>); null when <paramref name="data"/> is too short to hold it (the caller reads more). <paramref name="currentSize"/>
    /// stands in for the disk size of entries written before that field existed, as QEMU does.
    /// </summary>
    public static (SnapshotEntry Entry, int Length)? TryParse(ReadOnlySpan<byte> data, int index, long currentSize, string path)
    {
        if (data.Length < SnapshotField.FixedLength) return null;
        int idLength = BinaryPrimitives.ReadUInt16BigEndian(data[SnapshotField.IdLength..]);
        int nameLength = BinaryPrimitives.ReadUInt16BigEndian(data[SnapshotField.NameLength..]);
        uint extraLength = BinaryPrimitives.ReadUInt32BigEndian(data[SnapshotField.ExtraDataSize..]);
        if (extraLength > SnapshotField.MaxExtraLength)
            throw new DiskImageException(DiskImageErrorKind.CorruptImage, path,
                $"Too much extra metadata in snapshot table entry {index}\nYou can force-remove this extra metadata with qemu-img check -r all");
        long unpadded = SnapshotField.FixedLength + extraLength + idLength + nameLength;
        int length = (int)((unpadded + 7) & ~7L);
        // The padding of the last entry may lie past the end of the file (QEMU does not write it).
        if (data.Length < unpadded) return null;

        var e = new SnapshotEntry
        {
            L1TableOffset = (long)BinaryPrimitives.ReadUInt64BigEndian(data[SnapshotField.L1TableOffset..]),
            L1Size = BinaryPrimitives.ReadUInt32BigEndian(data[SnapshotField.L1Size..]),
            DateSeconds = BinaryPrimitives.ReadUInt32BigEndian(data[SnapshotField.DateSeconds..]),
            DateNanoseconds = BinaryPrimitives.ReadUInt32BigEndian(data[SnapshotField.DateNanoseconds..]),
            VmClockNanoseconds = BinaryPrimitives.ReadUInt64BigEndian(data[SnapshotField.VmClockNanoseconds..]),
            VmStateSize = BinaryPrimitives.ReadUInt32BigEndian(data[SnapshotField.VmStateSize..]),
            DiskSize = currentSize,
        };
        var extra = data.Slice(SnapshotField.FixedLength, (int)extraLength);
        // Older writers stored less extra data: read exactly what is there.
        if (extra.Length >= SnapshotField.ExtraVmStateSizeLarge + 8)
            e.VmStateSize = (long)BinaryPrimitives.ReadUInt64BigEndian(extra[SnapshotField.ExtraVmStateSizeLarge..]);
        if (extra.Length >= SnapshotField.ExtraDiskSize + 8)
            e.DiskSize = (long)BinaryPrimitives.ReadUInt64BigEndian(extra[SnapshotField.ExtraDiskSize..]);
        if (extra.Length >= SnapshotField.ExtraIcount + 8)
            e.Icount = (long)BinaryPrimitives.ReadUInt64BigEndian(extra[SnapshotField.ExtraIcount..]);
        if (extra.Length > SnapshotField.KnownExtraLength) e.UnknownExtra = extra[SnapshotField.KnownExtraLength..].ToArray();
        if (e.VmStateSize < 0 || e.DiskSize < 0)
            throw new DiskImageException(DiskImageErrorKind.CorruptImage, path, $"Snapshot table entry {index} has an invalid size");
        int pos = SnapshotField.FixedLength + (int)extraLength;
        e.Id = Encoding.UTF8.GetString(data.Slice(pos, idLength));
        e.Name = Encoding.UTF8.GetString(data.Slice(pos + idLength, nameLength));
        return (e, length);
    }

    /// <summary>Writes the entry (with vm_state_size_large, disk_size and icount) and returns its padded length.</summary>
    public int WriteTo(Span<byte> destination)
    {
        var id = Encoding.UTF8.GetBytes(Id);
        var name = Encoding.UTF8.GetBytes(Name);
        int length = SerializedLength;
        var d = destination[..length];
        d.Clear();
        BinaryPrimitives.WriteUInt64BigEndian(d[SnapshotField.L1TableOffset..], (ulong)L1TableOffset);
        BinaryPrimitives.WriteUInt32BigEndian(d[SnapshotField.L1Size..], L1Size);
        BinaryPrimitives.WriteUInt16BigEndian(d[SnapshotField.IdLength..], (ushort)id.Length);
        BinaryPrimitives.WriteUInt16BigEndian(d[SnapshotField.NameLength..], (ushort)name.Length);
        BinaryPrimitives.WriteUInt32BigEndian(d[SnapshotField.DateSeconds..], DateSeconds);
        BinaryPrimitives.WriteUInt32BigEndian(d[SnapshotField.DateNanoseconds..], DateNanoseconds);
        BinaryPrimitives.WriteUInt64BigEndian(d[SnapshotField.VmClockNanoseconds..], VmClockNanoseconds);
        // The 32-bit field keeps what fits, as QEMU writes it; readers that know the extra field ignore it.
        BinaryPrimitives.WriteUInt32BigEndian(d[SnapshotField.VmStateSize..], (uint)VmStateSize);
        BinaryPrimitives.WriteUInt32BigEndian(d[SnapshotField.ExtraDataSize..], (uint)(SnapshotField.KnownExtraLength + UnknownExtra.Length));
        var extra = d[SnapshotField.FixedLength..];
        BinaryPrimitives.WriteUInt64BigEndian(extra[SnapshotField.ExtraVmStateSizeLarge..], (ulong)VmStateSize);
        BinaryPrimitives.WriteUInt64BigEndian(extra[SnapshotField.ExtraDiskSize..], (ulong)DiskSize);
        BinaryPrimitives.WriteUInt64BigEndian(extra[SnapshotField.ExtraIcount..], (ulong)Icount);
        UnknownExtra.CopyTo(extra[SnapshotField.KnownExtraLength..]);
        int pos = SnapshotField.FixedLength + SnapshotField.KnownExtraLength + UnknownExtra.Length;
        id.CopyTo(d[pos..]);
        name.CopyTo(d[(pos + id.Length)..]);
        return length;
    }

    /// <summary>The whole table, entries back to back.</summary>
    public static byte[] SerializeTable(IReadOnlyList<SnapshotEntry> entries)
    {
        var bytes = new byte[entries.Sum(e => (long)e.SerializedLength)];
        int pos = 0;
        foreach (var e in entries) pos += e.WriteTo(bytes.AsSpan(pos));
        return bytes;
    }
}
