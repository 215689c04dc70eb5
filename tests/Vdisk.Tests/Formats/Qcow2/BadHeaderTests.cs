using System.Buffers.Binary;
using System.Diagnostics;
using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Formats.Qcow2.OnDisk;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Tests.Formats.Qcow2;

/// <summary>
/// reliability.md §1a-1c: malformed headers are refused at open with QEMU's wording, quickly and without
/// allocating what the header asks for; the corrupt bit limits opens to read-only; an L2 entry pointing at
/// metadata makes a write fail and marks the image corrupt while reads keep working.
/// </summary>
public class BadHeaderTests
{
    private const string Name = "/images/bad.qcow2";
    private const long DiskSize = 64L << 20;

    /// <summary>A valid v3 image with 64 KiB clusters (qemu-img's layout): header, reftable, refblock, L1 at 0x30000.</summary>
    private static byte[] ValidImage()
    {
        var device = new MemoryBlockDevice(name: Name);
        new Qcow2Format().Create(device, new ImageCreateOptions { Size = DiskSize });
        return device.ToArray();
    }

    private static MemoryBlockDevice Device(byte[] bytes)
    {
        var device = new MemoryBlockDevice(name: Name);
        device.Write(0, bytes.AsSpan());
        return device;
    }

    private static Action<byte[]> U32(int at, uint v) => b => BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(at), v);
    private static Action<byte[]> U64(int at, ulong v) => b => BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(at), v);

    public static readonly Dictionary<string, (Action<byte[]> Patch, DiskImageErrorKind Kind, string Wording)> Rows = new()
    {
        ["bad magic"] = (U32(0, 0x514649FA), DiskImageErrorKind.InvalidFormat, "Image is not in qcow2 format"),
        ["version 1"] = (U32(4, 1), DiskImageErrorKind.UnsupportedFeature, "Unsupported qcow2 version 1"),
        ["version 4"] = (U32(4, 4), DiskImageErrorKind.UnsupportedFeature, "Unsupported qcow2 version 4"),
        ["cluster_bits 8"] = (U32(20, 8), DiskImageErrorKind.UnsupportedFeature, "Unsupported cluster size: 2^8"),
        ["cluster_bits 22"] = (U32(20, 22), DiskImageErrorKind.UnsupportedFeature, "Unsupported cluster size: 2^22"),
        ["header_length 72"] = (U32(100, 72), DiskImageErrorKind.InvalidFormat, "qcow2 header too short"),
        ["header_length 0xffffffff"] = (U32(100, 0xffffffff), DiskImageErrorKind.InvalidFormat, "qcow2 header exceeds cluster size"),
        ["unknown incompatible bit"] = (U64(72, 1UL << 40), DiskImageErrorKind.UnsupportedFeature, "Unknown incompatible feature: 10000000000"),
        ["extension length 0x7fffffff"] = (U32(116, 0x7fffffff), DiskImageErrorKind.InvalidFormat, "Header extension too large"),
        ["backing_file_offset 2^64-1"] = (U64(8, ulong.MaxValue), DiskImageErrorKind.InvalidFormat, "Invalid backing file offset"),
        ["backing_file_size 0xffffffff"] = (b => { U64(8, 0x200)(b); U32(16, 0xffffffff)(b); }, DiskImageErrorKind.InvalidFormat, "Backing file name too long"),
        ["refcount_table_clusters 0"] = (U32(56, 0), DiskImageErrorKind.InvalidFormat, "Image does not contain a reference count table"),
        ["refcount_table_clusters 0xffffffff"] = (U32(56, 0xffffffff), DiskImageErrorKind.InvalidFormat, "Reference count table too large"),
        ["refcount_table_offset unaligned"] = (U64(48, 0x10200), DiskImageErrorKind.InvalidFormat, "Reference count table offset invalid"),
        ["refcount_table_offset near 2^64"] = (U64(48, 0xFFFFFFFFFFFF0000), DiskImageErrorKind.InvalidFormat, "Reference count table offset invalid"),
        ["nb_snapshots 0xffffffff"] = (U32(60, 0xffffffff), DiskImageErrorKind.InvalidFormat, "Snapshot table too large"),
        ["snapshots_offset unaligned"] = (U64(64, 0x123), DiskImageErrorKind.InvalidFormat, "Snapshot table offset invalid"),
        ["l1_size 0xffffffff"] = (U32(36, 0xffffffff), DiskImageErrorKind.InvalidFormat, "Active L1 table too large"),
        ["l1_table_offset unaligned"] = (U64(40, 0x30200), DiskImageErrorKind.InvalidFormat, "Active L1 table offset invalid"),
        ["l1_size 0"] = (U32(36, 0), DiskImageErrorKind.InvalidFormat, "L1 table is too small"),
        ["size 2^62"] = (U64(24, 1UL << 62), DiskImageErrorKind.InvalidFormat, "Image is too big"),
        ["refcount_order 7"] = (U32(96, 7), DiskImageErrorKind.UnsupportedFeature, "Reference count entry width too large; may not exceed 64 bits"),
        ["crypt_method 5"] = (U32(32, 5), DiskImageErrorKind.UnsupportedFeature, "Unsupported encryption method 5"),
        ["compression_type 5"] = (b => { U64(72, 0x8)(b); b[104] = 5; }, DiskImageErrorKind.UnsupportedFeature, "qcow2: unknown compression type: 5"),
        ["truncated to 10 bytes"] = (b => Array.Clear(b, 10, b.Length - 10), DiskImageErrorKind.InvalidFormat, "qcow2 header too short"),
        ["truncated to 71 bytes"] = (b => Array.Clear(b, 71, b.Length - 71), DiskImageErrorKind.InvalidFormat, "qcow2 header too short"),
    };

    public static IEnumerable<object[]> RowNames() => Rows.Keys.Select(k => new object[] { k });

    [Theory]
    [MemberData(nameof(RowNames))]
    public void MalformedHeaderIsRefusedQuicklyWithQemusWording(string row)
    {
        var (patch, kind, wording) = Rows[row];
        var bytes = ValidImage();
        patch(bytes);
        if (row.StartsWith("truncated")) bytes = bytes[..int.Parse(row.Split(' ')[2])];
        foreach (bool readOnly in new[] { true, false })
        {
            var device = Device(bytes);
            long allocated = GC.GetAllocatedBytesForCurrentThread();
            var clock = Stopwatch.StartNew();
            var e = Assert.ThrowsAny<DiskImageException>(() => Qcow2Image.Open(device, new ImageOpenOptions { ReadOnly = readOnly }).Dispose());
            clock.Stop();
            long used = GC.GetAllocatedBytesForCurrentThread() - allocated;
            Assert.True(kind == e.Kind, $"{row}: expected {kind}, got {e.Kind}: {e.Message}");
            Assert.Contains(wording, e.Message);
            Assert.StartsWith(Name + ": ", e.Message);
            Assert.True(used < 64L << 20, $"{row}: the open allocated {used >> 20} MiB");
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"{row}: the open took {clock.Elapsed}");
        }
    }

    [Fact]
    public void CorruptBitAllowsReadOnlyOpensOnly()
    {
        var bytes = ValidImage();
        BinaryPrimitives.WriteUInt64BigEndian(bytes.AsSpan(72), (ulong)IncompatibleFeatures.Corrupt);
        var e = Assert.ThrowsAny<DiskImageException>(() => Qcow2Image.Open(Device(bytes), new ImageOpenOptions()).Dispose());
        Assert.Equal(DiskImageErrorKind.CorruptImage, e.Kind);
        Assert.Contains("qcow2: Image is corrupt; cannot be opened read/write", e.Message);
        Assert.StartsWith(Name, e.Message);

        using var image = Qcow2Image.Open(Device(bytes), new ImageOpenOptions { ReadOnly = true });
        Assert.True(image.IsCorrupt);
        var back = new byte[4096];
        image.Read(0, back.AsSpan());
        Assert.All(back, b => Assert.Equal(0, b));
    }

    /// <summary>§1c rows 26-27: the guest cluster at offset 0 is redirected onto metadata, COPIED so it is written in place.</summary>
    [Theory]
    [InlineData(0x30000, "active L1 table")]
    [InlineData(0x10000, "refcount table")]
    [InlineData(0x20000, "refcount block")]
    public void WriteThroughAnL2EntryPointingAtMetadataMarksTheImageCorrupt(long target, string overlapName)
    {
        var device = new MemoryBlockDevice(name: Name);
        new Qcow2Format().Create(device, new ImageCreateOptions { Size = DiskSize });
        using (var image = Qcow2Image.Open(new BorrowedBlockDevice(device), new ImageOpenOptions()))
            image.Write(0, Enumerable.Repeat((byte)0x11, 65536).ToArray().AsSpan());
        long l2 = (long)(BinaryPrimitives.ReadUInt64BigEndian(device.ToArray().AsSpan(0x30000)) & Entry.L1OffsetMask);
        Assert.NotEqual(0, l2);
        var entry = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(entry, Entry.Copied | (ulong)target);
        device.Write(l2, entry.AsSpan());
        var metadataBefore = device.ToArray()[(int)target..(int)(target + 65536)];

        using (var image = Qcow2Image.Open(new BorrowedBlockDevice(device), new ImageOpenOptions()))
        {
            var e = Assert.Throws<CorruptImageException>(() => image.Write(512, new byte[512].AsSpan()));
            Assert.Contains($"Preventing invalid write on metadata (overlaps with {overlapName})", e.Message);
            Assert.StartsWith(Name, e.Message);
            Assert.True(image.IsCorrupt);
            var back = new byte[512];
            image.Read(65536, back.AsSpan()); // reads keep working
            Assert.Throws<CorruptImageException>(() => image.Write(65536, new byte[512].AsSpan()));
        }
        var after = device.ToArray();
        Assert.Equal(metadataBefore, after[(int)target..(int)(target + 65536)]);
        Assert.NotEqual(0UL, BinaryPrimitives.ReadUInt64BigEndian(after.AsSpan(72)) & (ulong)IncompatibleFeatures.Corrupt);

        Assert.ThrowsAny<DiskImageException>(() => Qcow2Image.Open(new BorrowedBlockDevice(device), new ImageOpenOptions()).Dispose());
        using var readOnly = Qcow2Image.Open(new BorrowedBlockDevice(device), new ImageOpenOptions { ReadOnly = true });
        var data = new byte[65536];
        readOnly.Read(0, data.AsSpan());
        Assert.Equal(metadataBefore, data); // the guest sees the metadata cluster, as QEMU's read does
    }

    /// <summary>
    /// Tables past the end of the file or on top of the header. QEMU 7.2 opens these (reads past the end give
    /// zeros) and only a write trips over them: checked against qemu-io, a write is refused and the image marked
    /// corrupt when the refcount table is unusable or the L1 table overlaps the header, while an L1 table past
    /// the end of the file is simply empty and grows the file when written.
    /// </summary>
    [Theory]
    [InlineData(40, 1L << 30, null)]
    [InlineData(48, 1L << 30, "Preventing invalid")]
    [InlineData(40, 0L, "Preventing invalid write on metadata (overlaps with qcow2_header)")]
    [InlineData(48, 0L, "Refblock offset 0x514649fb00000003 unaligned (reftable index: 0x0)")]
    public void TablesPastTheEndOrOnTheHeaderFailOnWriteNotOnOpen(int field, long offset, string? wording)
    {
        var bytes = ValidImage();
        BinaryPrimitives.WriteUInt64BigEndian(bytes.AsSpan(field), (ulong)offset);
        var device = Device(bytes);
        long allocated = GC.GetAllocatedBytesForCurrentThread();
        using (var image = Qcow2Image.Open(new BorrowedBlockDevice(device), new ImageOpenOptions { ReadOnly = true }))
        {
            Assert.True(GC.GetAllocatedBytesForCurrentThread() - allocated < 64L << 20);
            var back = new byte[65536];
            image.Read(0, back.AsSpan());
            if (!(field == 40 && offset == 0)) Assert.All(back, b => Assert.Equal(0, b));
        }
        var data = Enumerable.Repeat((byte)0x77, 4096).ToArray();
        using (var image = Qcow2Image.Open(new BorrowedBlockDevice(device), new ImageOpenOptions()))
        {
            if (wording is null)
            {
                image.Write(1 << 20, data.AsSpan());
                var back = new byte[4096];
                image.Read(1 << 20, back.AsSpan());
                Assert.Equal(data, back);
                return;
            }
            var e = Assert.Throws<CorruptImageException>(() => { image.Write(1 << 20, data.AsSpan()); image.Flush(); });
            Assert.True(e.Message.Contains(wording), e.Message);
            Assert.StartsWith(Name, e.Message);
            Assert.True(image.IsCorrupt);
        }
        var header = new byte[80]; // not ToArray(): a table past the end may have grown the device to 1 GiB
        device.Read(0, header.AsSpan());
        Assert.Equal(bytes.AsSpan(0, 72).ToArray(), header[..72]); // the header itself was not overwritten
        Assert.NotEqual(0UL, BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(72)) & (ulong)IncompatibleFeatures.Corrupt);
    }
}
