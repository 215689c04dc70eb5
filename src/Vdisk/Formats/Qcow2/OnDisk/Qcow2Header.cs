using System.Buffers.Binary;
using System.Text;
using Vdisk.Images;

namespace Vdisk.Formats.Qcow2.OnDisk;

/// <summary>Byte offsets of the qcow2 header fields (big-endian), from the qcow2 specification.</summary>
public static class HeaderField
{
    public const int Magic = 0, Version = 4, BackingFileOffset = 8, BackingFileSize = 16, ClusterBits = 20, Size = 24,
        CryptMethod = 32, L1Size = 36, L1TableOffset = 40, RefcountTableOffset = 48, RefcountTableClusters = 56,
        NbSnapshots = 60, SnapshotsOffset = 64, IncompatibleFeatures = 72, CompatibleFeatures = 80,
        AutoclearFeatures = 88, RefcountOrder = 96, HeaderLength = 100, CompressionType = 104;

    public const int V2Length = 72;
    public const int V3MinLength = 104;
    /// <summary>What QEMU writes for v3: the fields up to compression_type plus padding.</summary>
    public const int V3Length = 112;
}

/// <summary>The qcow2 header (cluster 0): fields, header extensions and the backing file name.</summary>
public sealed class Qcow2Header
{
    public const uint MagicValue = 0x514649FB;
    public const int MinClusterBits = 9, MaxClusterBits = 21;
    public const long MaxL1Bytes = 32L << 20;          // QEMU's QCOW_MAX_L1_SIZE
    public const long MaxRefcountTableBytes = 8L << 20; // QCOW_MAX_REFTABLE_SIZE
    public const int MaxSnapshots = 65536;
    public const long MaxSnapshotTableBytes = 64L << 20;
    public const int MaxBackingFileNameLength = 1023;

    public uint Version { get; set; }
    public ulong BackingFileOffset { get; set; }
    public uint BackingFileSize { get; set; }
    public int ClusterBits { get; set; }
    public long Size { get; set; }
    public uint CryptMethod { get; set; }
    public uint L1Size { get; set; }
    public long L1TableOffset { get; set; }
    public long RefcountTableOffset { get; set; }
    public uint RefcountTableClusters { get; set; }
    public uint SnapshotCount { get; set; }
    public long SnapshotsOffset { get; set; }
    public IncompatibleFeatures Incompatible { get; set; }
    public CompatibleFeatures Compatible { get; set; }
    public AutoclearFeatures Autoclear { get; set; }
    public int RefcountOrder { get; set; } = 4;
    public uint HeaderLength { get; set; }
    public byte CompressionType { get; set; }
    /// <summary>Additional v3 header fields past the ones we know, kept for rewriting.</summary>
    public byte[] UnknownFields { get; set; } = Array.Empty<byte>();
    public List<HeaderExtension> Extensions { get; } = new();
    public string? BackingFile { get; set; }

    public int ClusterSize => 1 << ClusterBits;
    public bool ExtendedL2 => Incompatible.HasFlag(IncompatibleFeatures.ExtendedL2);
    public int L2EntrySize => ExtendedL2 ? 16 : 8;
    public int L2Bits => ClusterBits - (ExtendedL2 ? 4 : 3);
    public int RefcountBits => 1 << RefcountOrder;

    public string? BackingFormat
    {
        get => Extensions.FirstOrDefault(e => e.Type == HeaderExtension.BackingFormat) is { } e ? Encoding.UTF8.GetString(e.Data) : null;
        set
        {
            Extensions.RemoveAll(e => e.Type == HeaderExtension.BackingFormat);
            if (value is not null) Extensions.Insert(0, HeaderExtension.Text(HeaderExtension.BackingFormat, value));
        }
    }

    /// <summary>Guest bytes covered by one L1 entry.</summary>
    public long BytesPerL1Entry => 1L << (ClusterBits + L2Bits);

    /// <summary>L1 entries needed to map a virtual size (QEMU's size_to_l1).</summary>
    public long L1EntriesFor(long size) => (size + BytesPerL1Entry - 1) >> (ClusterBits + L2Bits);

    /// <summary>
    /// Parses and validates a header from the start of the file, checking every value that drives an allocation
    /// or an offset before it is used, with QEMU's wording for each refusal.
    /// </summary>
    public static Qcow2Header Parse(ReadOnlySpan<byte> data, string path)
    {
        DiskImageException Invalid(string problem) => new(DiskImageErrorKind.InvalidFormat, path, problem);
        if (data.Length < 4 || BinaryPrimitives.ReadUInt32BigEndian(data) != MagicValue)
            throw Invalid("Image is not in qcow2 format");
        if (data.Length < HeaderField.V2Length) throw Invalid("qcow2 header too short");

        var h = new Qcow2Header
        {
            Version = BinaryPrimitives.ReadUInt32BigEndian(data[HeaderField.Version..]),
            BackingFileOffset = BinaryPrimitives.ReadUInt64BigEndian(data[HeaderField.BackingFileOffset..]),
            BackingFileSize = BinaryPrimitives.ReadUInt32BigEndian(data[HeaderField.BackingFileSize..]),
            CryptMethod = BinaryPrimitives.ReadUInt32BigEndian(data[HeaderField.CryptMethod..]),
            L1Size = BinaryPrimitives.ReadUInt32BigEndian(data[HeaderField.L1Size..]),
            RefcountTableClusters = BinaryPrimitives.ReadUInt32BigEndian(data[HeaderField.RefcountTableClusters..]),
            SnapshotCount = BinaryPrimitives.ReadUInt32BigEndian(data[HeaderField.NbSnapshots..]),
        };
        if (h.Version is < 2 or > 3)
            throw new DiskImageException(DiskImageErrorKind.UnsupportedFeature, path, $"Unsupported qcow2 version {h.Version}");
        uint clusterBits = BinaryPrimitives.ReadUInt32BigEndian(data[HeaderField.ClusterBits..]);
        if (clusterBits is < MinClusterBits or > MaxClusterBits)
            throw new DiskImageException(DiskImageErrorKind.UnsupportedFeature, path, $"Unsupported cluster size: 2^{clusterBits}");
        h.ClusterBits = (int)clusterBits;
        ulong size = BinaryPrimitives.ReadUInt64BigEndian(data[HeaderField.Size..]);
        ulong l1Offset = BinaryPrimitives.ReadUInt64BigEndian(data[HeaderField.L1TableOffset..]);
        ulong refOffset = BinaryPrimitives.ReadUInt64BigEndian(data[HeaderField.RefcountTableOffset..]);
        ulong snapOffset = BinaryPrimitives.ReadUInt64BigEndian(data[HeaderField.SnapshotsOffset..]);

        if (h.Version == 2)
        {
            h.HeaderLength = HeaderField.V2Length;
            h.RefcountOrder = 4;
        }
        else
        {
            if (data.Length < HeaderField.V3MinLength) throw Invalid("qcow2 header too short");
            h.Incompatible = (IncompatibleFeatures)BinaryPrimitives.ReadUInt64BigEndian(data[HeaderField.IncompatibleFeatures..]);
            h.Compatible = (CompatibleFeatures)BinaryPrimitives.ReadUInt64BigEndian(data[HeaderField.CompatibleFeatures..]);
            h.Autoclear = (AutoclearFeatures)BinaryPrimitives.ReadUInt64BigEndian(data[HeaderField.AutoclearFeatures..]);
            uint order = BinaryPrimitives.ReadUInt32BigEndian(data[HeaderField.RefcountOrder..]);
            h.HeaderLength = BinaryPrimitives.ReadUInt32BigEndian(data[HeaderField.HeaderLength..]);
            if (h.HeaderLength < HeaderField.V3MinLength) throw Invalid("qcow2 header too short");
            if (h.HeaderLength > h.ClusterSize) throw Invalid("qcow2 header exceeds cluster size");
            if (h.HeaderLength > data.Length) throw Invalid("qcow2 header exceeds the end of the file");
            if (order > 6)
                throw new DiskImageException(DiskImageErrorKind.UnsupportedFeature, path, "Reference count entry width too large; may not exceed 64 bits");
            h.RefcountOrder = (int)order;
            if (h.HeaderLength > HeaderField.CompressionType) h.CompressionType = data[HeaderField.CompressionType];
            if (h.HeaderLength > HeaderField.V3Length)
                h.UnknownFields = data[HeaderField.V3Length..(int)h.HeaderLength].ToArray();
        }

        if (h.BackingFileOffset > (ulong)h.ClusterSize) throw Invalid("Invalid backing file offset");
        ParseExtensions(h, data, path);

        var unknown = h.Incompatible & ~IncompatibleFeatures.Known;
        if (unknown != 0)
            throw new DiskImageException(DiskImageErrorKind.UnsupportedFeature, path,
                $"Unsupported qcow2 feature(s): Unknown incompatible feature: {(ulong)unknown:x}");
        if (h.Incompatible.HasFlag(IncompatibleFeatures.CompressionType))
        {
            if (h.HeaderLength <= HeaderField.CompressionType || h.CompressionType == 0)
                throw Invalid("qcow2: Compression type incompatible feature bit must not be set");
            if (h.CompressionType > 1)
                throw new DiskImageException(DiskImageErrorKind.UnsupportedFeature, path, $"qcow2: unknown compression type: {h.CompressionType}");
        }
        else if (h.CompressionType != 0)
            throw Invalid("qcow2: Compression type incompatible feature bit must be set");
        if (h.CryptMethod != 0)
            throw new DiskImageException(DiskImageErrorKind.UnsupportedFeature, path,
                h.CryptMethod > 2 ? $"Unsupported encryption method {h.CryptMethod}" : "Encrypted images are not supported");
        if (h.ExtendedL2 && h.ClusterBits < 14)
            throw Invalid("The cluster size must be at least 16 KiB with extended L2 entries");

        if ((long)h.RefcountTableClusters * h.ClusterSize > MaxRefcountTableBytes) throw Invalid("Reference count table too large");
        if (h.RefcountTableClusters == 0) throw Invalid("Image does not contain a reference count table");
        h.RefcountTableOffset = ValidateOffset(refOffset, (long)h.RefcountTableClusters * h.ClusterSize, h, path, "Reference count table offset invalid");

        if (h.SnapshotCount > MaxSnapshots) throw Invalid("Snapshot table too large");
        h.SnapshotsOffset = ValidateOffset(snapOffset, h.SnapshotCount * 40L, h, path, "Snapshot table offset invalid");

        if (h.L1Size > MaxL1Bytes / 8) throw Invalid("Active L1 table too large");
        if (size > long.MaxValue) throw Invalid("Image is too big");
        h.Size = (long)size;
        long neededL1 = h.L1EntriesFor(h.Size);
        if (neededL1 > int.MaxValue || neededL1 > MaxL1Bytes / 8) throw Invalid("Image is too big");
        if (h.L1Size < neededL1) throw Invalid("L1 table is too small");
        h.L1TableOffset = ValidateOffset(l1Offset, h.L1Size * 8L, h, path, "Active L1 table offset invalid");

        if (h.BackingFileOffset != 0)
        {
            if (h.BackingFileSize > MaxBackingFileNameLength) throw Invalid("Backing file name too long");
            if (h.BackingFileOffset + h.BackingFileSize > (ulong)data.Length) throw Invalid("Invalid backing file offset");
            h.BackingFile = Encoding.UTF8.GetString(data.Slice((int)h.BackingFileOffset, (int)h.BackingFileSize));
        }
        return h;
    }

    private static long ValidateOffset(ulong offset, long size, Qcow2Header h, string path, string problem)
    {
        if ((offset & (ulong)(h.ClusterSize - 1)) != 0 || offset > (ulong)(long.MaxValue - size))
            throw new DiskImageException(DiskImageErrorKind.InvalidFormat, path, problem);
        return (long)offset;
    }

    private static void ParseExtensions(Qcow2Header h, ReadOnlySpan<byte> data, string path)
    {
        // Extensions run from the end of the header to the backing file name (or the end of cluster 0).
        long end = h.BackingFileOffset != 0 ? (long)h.BackingFileOffset : Math.Min(h.ClusterSize, data.Length);
        long pos = h.HeaderLength;
        while (pos + 8 <= end)
        {
            uint type = BinaryPrimitives.ReadUInt32BigEndian(data[(int)pos..]);
            uint length = BinaryPrimitives.ReadUInt32BigEndian(data[(int)(pos + 4)..]);
            if (type == HeaderExtension.End) return;
            if (length > end - pos - 8)
                throw new DiskImageException(DiskImageErrorKind.InvalidFormat, path, "Header extension too large");
            var payload = data.Slice((int)pos + 8, (int)length).ToArray();
            if (type == HeaderExtension.BackingFormat && length > 1023)
                throw new DiskImageException(DiskImageErrorKind.InvalidFormat, path, "Backing file format name too long");
            h.Extensions.Add(new HeaderExtension(type, payload));
            pos += 8 + ((length + 7) & ~7L);
        }
    }

    /// <summary>Bytes of the header area (fields, extensions, end marker, backing file name), as QEMU lays them out.</summary>
    public byte[] Serialize()
    {
        int fixedLength = Version == 2 ? HeaderField.V2Length : (int)Math.Max(HeaderLength, HeaderField.V3Length);
        if (Version == 3) HeaderLength = (uint)fixedLength;
        var extensions = Version == 2
            ? Extensions.Where(e => e.Type != HeaderExtension.FeatureNameTable).ToList()
            : Extensions;
        int extLength = extensions.Sum(e => e.PaddedSize) + 8;
        byte[] name = BackingFile is null ? Array.Empty<byte>() : Encoding.UTF8.GetBytes(BackingFile);
        var buffer = new byte[fixedLength + extLength + name.Length];
        var s = buffer.AsSpan();
        BinaryPrimitives.WriteUInt32BigEndian(s[HeaderField.Magic..], MagicValue);
        BinaryPrimitives.WriteUInt32BigEndian(s[HeaderField.Version..], Version);
        BackingFileOffset = BackingFile is null ? 0 : (ulong)(fixedLength + extLength);
        BackingFileSize = (uint)name.Length;
        BinaryPrimitives.WriteUInt64BigEndian(s[HeaderField.BackingFileOffset..], BackingFileOffset);
        BinaryPrimitives.WriteUInt32BigEndian(s[HeaderField.BackingFileSize..], BackingFileSize);
        BinaryPrimitives.WriteUInt32BigEndian(s[HeaderField.ClusterBits..], (uint)ClusterBits);
        BinaryPrimitives.WriteUInt64BigEndian(s[HeaderField.Size..], (ulong)Size);
        BinaryPrimitives.WriteUInt32BigEndian(s[HeaderField.CryptMethod..], CryptMethod);
        BinaryPrimitives.WriteUInt32BigEndian(s[HeaderField.L1Size..], L1Size);
        BinaryPrimitives.WriteUInt64BigEndian(s[HeaderField.L1TableOffset..], (ulong)L1TableOffset);
        BinaryPrimitives.WriteUInt64BigEndian(s[HeaderField.RefcountTableOffset..], (ulong)RefcountTableOffset);
        BinaryPrimitives.WriteUInt32BigEndian(s[HeaderField.RefcountTableClusters..], RefcountTableClusters);
        BinaryPrimitives.WriteUInt32BigEndian(s[HeaderField.NbSnapshots..], SnapshotCount);
        BinaryPrimitives.WriteUInt64BigEndian(s[HeaderField.SnapshotsOffset..], (ulong)SnapshotsOffset);
        if (Version >= 3)
        {
            BinaryPrimitives.WriteUInt64BigEndian(s[HeaderField.IncompatibleFeatures..], (ulong)Incompatible);
            BinaryPrimitives.WriteUInt64BigEndian(s[HeaderField.CompatibleFeatures..], (ulong)Compatible);
            BinaryPrimitives.WriteUInt64BigEndian(s[HeaderField.AutoclearFeatures..], (ulong)Autoclear);
            BinaryPrimitives.WriteUInt32BigEndian(s[HeaderField.RefcountOrder..], (uint)RefcountOrder);
            BinaryPrimitives.WriteUInt32BigEndian(s[HeaderField.HeaderLength..], HeaderLength);
            s[HeaderField.CompressionType] = CompressionType;
            UnknownFields.CopyTo(s[HeaderField.V3Length..]);
        }
        int pos = fixedLength;
        foreach (var e in extensions) pos += e.WriteTo(s[pos..]);
        pos += 8; // end-of-extensions marker: eight zero bytes
        name.CopyTo(s[pos..]);
        return buffer;
    }
}
