using System.Buffers.Binary;
using System.Text;
using Vdisk.Formats.Qcow2.OnDisk;
using Xunit;

namespace Vdisk.Tests.Formats.Qcow2;

/// <summary>Header parse and serialize against byte vectors laid out by hand from the qcow2 specification.</summary>
public class HeaderRoundTripTests
{
    private static void U32(byte[] b, int at, uint v) => BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(at), v);
    private static void U64(byte[] b, int at, ulong v) => BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(at), v);

    /// <summary>
    /// v3, 64 KiB clusters, extended L2 and zstd, lazy refcounts, a backing file with its format and one
    /// unknown extension (which must survive a rewrite).
    /// </summary>
    private static byte[] V3Vector()
    {
        var b = new byte[162];
        U32(b, 0, 0x514649FB);            // magic "QFI\xfb"
        U32(b, 4, 3);                     // version
        U64(b, 8, 152);                   // backing_file_offset: after the extensions and the end marker
        U32(b, 16, 10);                   // backing_file_size: "base.qcow2"
        U32(b, 20, 16);                   // cluster_bits: 64 KiB
        U64(b, 24, 1UL << 30);            // size: 1 GiB
        U32(b, 32, 0);                    // crypt_method: none
        U32(b, 36, 4);                    // l1_size: 1 GiB / (2^12 entries * 64 KiB) with 16-byte L2 entries
        U64(b, 40, 0x30000);              // l1_table_offset
        U64(b, 48, 0x10000);              // refcount_table_offset
        U32(b, 56, 1);                    // refcount_table_clusters
        U32(b, 60, 0);                    // nb_snapshots
        U64(b, 64, 0);                    // snapshots_offset
        U64(b, 72, 0x8 | 0x10);           // incompatible: compression type, extended L2
        U64(b, 80, 0x1);                  // compatible: lazy refcounts
        U64(b, 88, 0);                    // autoclear
        U32(b, 96, 4);                    // refcount_order: 16 bits
        U32(b, 100, 112);                 // header_length
        b[104] = 1;                       // compression_type: zstd; 105-111 padding
        U32(b, 112, 0xE2792ACA);          // extension: backing file format
        U32(b, 116, 5);
        Encoding.ASCII.GetBytes("qcow2").CopyTo(b, 120); // + 3 bytes of padding
        U32(b, 128, 0x12345678);          // extension: unknown to us
        U32(b, 132, 3);
        b[136] = 0xAA; b[137] = 0xBB; b[138] = 0xCC;     // + 5 bytes of padding
        // 144-151: end of extensions (type 0)
        Encoding.ASCII.GetBytes("base.qcow2").CopyTo(b, 152);
        return b;
    }

    [Fact]
    public void V3HeaderParsesFieldByField()
    {
        var h = Qcow2Header.Parse(V3Vector(), "v3.qcow2");
        Assert.Equal(3u, h.Version);
        Assert.Equal(16, h.ClusterBits);
        Assert.Equal(1L << 30, h.Size);
        Assert.Equal(4u, h.L1Size);
        Assert.Equal(0x30000, h.L1TableOffset);
        Assert.Equal(0x10000, h.RefcountTableOffset);
        Assert.Equal(1u, h.RefcountTableClusters);
        Assert.Equal(IncompatibleFeatures.CompressionType | IncompatibleFeatures.ExtendedL2, h.Incompatible);
        Assert.Equal(CompatibleFeatures.LazyRefcounts, h.Compatible);
        Assert.Equal(16, h.RefcountBits);
        Assert.Equal(112u, h.HeaderLength);
        Assert.Equal(1, h.CompressionType);
        Assert.True(h.ExtendedL2);
        Assert.Equal(16, h.L2EntrySize);
        Assert.Equal(12, h.L2Bits);
        Assert.Equal("base.qcow2", h.BackingFile);
        Assert.Equal("qcow2", h.BackingFormat);
        var unknown = Assert.Single(h.Extensions, e => e.Type == 0x12345678);
        Assert.Equal(new byte[] { 0xAA, 0xBB, 0xCC }, unknown.Data);
    }

    [Fact]
    public void V3HeaderSerializesToTheSameBytes()
    {
        var vector = V3Vector();
        var bytes = Qcow2Header.Parse(vector, "v3.qcow2").Serialize();
        Assert.Equal(Convert.ToHexString(vector), Convert.ToHexString(bytes));
    }

    [Fact]
    public void V2HeaderRoundTripsWithoutV3Fields()
    {
        var b = new byte[72 + 8 + 8];
        U32(b, 0, 0x514649FB);
        U32(b, 4, 2);                     // version 2: the header ends at byte 72
        U64(b, 8, 80);                    // backing name after the end-of-extensions marker
        U32(b, 16, 8);
        U32(b, 20, 12);                   // 4 KiB clusters
        U64(b, 24, 16UL << 20);           // 16 MiB: 512 entries per L2 cover 2 MiB, so 8 L1 entries
        U32(b, 36, 8);
        U64(b, 40, 0x3000);
        U64(b, 48, 0x1000);
        U32(b, 56, 1);
        Encoding.ASCII.GetBytes("base.raw").CopyTo(b, 80);

        var h = Qcow2Header.Parse(b, "v2.qcow2");
        Assert.Equal(2u, h.Version);
        Assert.Equal(72u, h.HeaderLength);
        Assert.Equal(4, h.RefcountOrder); // implied by v2
        Assert.Equal(0, h.CompressionType);
        Assert.Equal(IncompatibleFeatures.None, h.Incompatible);
        Assert.Equal("base.raw", h.BackingFile);
        Assert.Null(h.BackingFormat);
        Assert.Equal(Convert.ToHexString(b), Convert.ToHexString(h.Serialize()));
    }

    [Fact]
    public void LongerV3HeaderKeepsUnknownAdditionalFields()
    {
        var v = V3Vector();
        // header_length 120: eight more bytes of header fields we do not know; extensions move up by 8.
        var b = new byte[v.Length + 8];
        v.AsSpan(0, 112).CopyTo(b);
        U32(b, 100, 120);
        for (int i = 112; i < 120; i++) b[i] = (byte)(0xF0 + i - 112);
        v.AsSpan(112).CopyTo(b.AsSpan(120));
        U64(b, 8, 160);
        var h = Qcow2Header.Parse(b, "long.qcow2");
        Assert.Equal(120u, h.HeaderLength);
        Assert.Equal(new byte[] { 0xF0, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7 }, h.UnknownFields);
        Assert.Equal(Convert.ToHexString(b), Convert.ToHexString(h.Serialize()));
    }
}
