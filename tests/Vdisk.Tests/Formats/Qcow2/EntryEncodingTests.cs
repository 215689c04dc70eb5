using Vdisk.Formats.Qcow2.OnDisk;
using Xunit;

namespace Vdisk.Tests.Formats.Qcow2;

/// <summary>L2 entry classification, compressed descriptors and refcount entry packing, against the spec's bit layouts.</summary>
public class EntryEncodingTests
{
    [Fact]
    public void StandardEntriesClassifyLikeQemu()
    {
        var normal = new L2Entry(0x8000000000050000);
        Assert.Equal(ClusterKind.Normal, normal.Kind(false));
        Assert.True(normal.IsCopied);
        Assert.Equal(0x50000, normal.HostOffset);

        Assert.Equal(ClusterKind.ZeroPlain, new L2Entry(0x1).Kind(false));
        Assert.Equal(ClusterKind.ZeroAllocated, new L2Entry(0x50001).Kind(false));
        Assert.Equal(ClusterKind.Unallocated, new L2Entry(0).Kind(false));
        var shared = new L2Entry(0x50000);
        Assert.Equal(ClusterKind.Normal, shared.Kind(false));
        Assert.False(shared.IsCopied);
        // Bits 56-61 are reserved: they are not part of the host offset.
        Assert.Equal(0x50000, new L2Entry(0x0200000000050000).HostOffset);
    }

    [Fact]
    public void ExtendedEntriesIgnoreTheZeroFlagAndUseTheBitmap()
    {
        // With extended L2 entries bit 0 is unused: this entry is unallocated, not zero.
        Assert.Equal(ClusterKind.Unallocated, new L2Entry(0x1).Kind(true));

        ulong bitmap = Entry.SubclusterAllocated(0) | Entry.SubclusterAllocated(1) | Entry.SubclusterZero(2) | Entry.SubclusterZero(31);
        var e = new L2Entry(0x8000000000040000, bitmap);
        Assert.Equal(0x8000000400000003UL, bitmap); // alloc bits 0-1, zero bits 32+2 and 32+31
        Assert.Equal(ClusterKind.Normal, e.SubclusterKind(true, 0));
        Assert.Equal(ClusterKind.Normal, e.SubclusterKind(true, 1));
        Assert.Equal(ClusterKind.ZeroAllocated, e.SubclusterKind(true, 2));
        Assert.Equal(ClusterKind.Unallocated, e.SubclusterKind(true, 3));
        Assert.Equal(ClusterKind.ZeroAllocated, e.SubclusterKind(true, 31));

        var noHost = new L2Entry(0, Entry.SubclusterZero(5));
        Assert.Equal(ClusterKind.ZeroPlain, noHost.SubclusterKind(true, 5));
        Assert.Equal(ClusterKind.Unallocated, noHost.SubclusterKind(true, 4));
        Assert.Equal(0xFFFFFFFF00000000UL, Entry.AllZeroBitmap);
        Assert.Equal(1UL << 32 + 7, Entry.SubclusterZero(7));
    }

    /// <summary>
    /// x = 62 - (cluster_bits - 8): bits 0..x-1 hold the byte offset, bits x..61 the number of additional
    /// 512-byte sectors. The raw values are worked out by hand.
    /// </summary>
    [Theory]
    [InlineData(9, 0x6000000000001000UL, 0x1000L, 2)]          // x = 61: one sector-count bit
    [InlineData(12, 0x5400000000012345UL, 0x12345L, 6)]        // x = 58: 5 << 58 = 0x14000...
    [InlineData(16, 0x40C0000123456789UL, 0x123456789L, 4)]    // x = 54: 3 additional sectors
    [InlineData(21, 0x7FFE000100000200UL, 0x100000200L, 8192)] // x = 49: all 13 bits set
    public void CompressedDescriptorsDecodeForEachClusterSize(int clusterBits, ulong raw, long offset, int sectors)
    {
        var e = new L2Entry(raw);
        Assert.True(e.IsCompressed);
        Assert.Equal(ClusterKind.Compressed, e.Kind(false));
        Assert.Equal(ClusterKind.Compressed, e.Kind(true));
        Assert.Equal(ClusterKind.Compressed, e.SubclusterKind(true, 3));
        Assert.Equal((offset, sectors), e.CompressedExtent(clusterBits));
        Assert.Equal(raw, L2Entry.MakeCompressed(offset, sectors, clusterBits));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    public void RefcountEntriesOfEveryWidthRoundTripWithoutDisturbingNeighbours(int order)
    {
        var block = new byte[512];
        int entries = 512 * 8 >> order;
        ulong max = RefcountBlock.MaxValue(order);
        Assert.Equal(order == 6 ? ulong.MaxValue : (1UL << (1 << order)) - 1, max);
        ulong Value(int i) => ((ulong)i * 0x9E3779B97F4A7C15UL >> 7) & max;
        for (int i = 0; i < entries; i++) RefcountBlock.Set(block, order, i, Value(i));
        for (int i = 0; i < entries; i++) Assert.Equal(Value(i), RefcountBlock.Get(block, order, i));
        // Overwrite every third entry with max and then zero; the others must keep their values.
        for (int i = 0; i < entries; i += 3) RefcountBlock.Set(block, order, i, max);
        for (int i = 0; i < entries; i += 3) Assert.Equal(max, RefcountBlock.Get(block, order, i));
        for (int i = 0; i < entries; i += 3) RefcountBlock.Set(block, order, i, 0);
        for (int i = 0; i < entries; i++) Assert.Equal(i % 3 == 0 ? 0 : Value(i), RefcountBlock.Get(block, order, i));
    }

    [Theory]
    [InlineData(0, 9, 1UL, 1, 0x02)]      // sub-byte widths: entry 0 in the least significant bits
    [InlineData(1, 1, 3UL, 0, 0x0C)]
    [InlineData(2, 1, 0xAUL, 0, 0xA0)]
    [InlineData(3, 5, 0x7FUL, 5, 0x7F)]
    [InlineData(4, 1, 0x1234UL, 2, 0x12)] // wider entries are big-endian
    [InlineData(5, 1, 0x12345678UL, 4, 0x12)]
    [InlineData(6, 1, 0x0102030405060708UL, 15, 0x08)]
    public void RefcountEntriesUseTheSpecBitLayout(int order, int index, ulong value, int byteIndex, byte expected)
    {
        var block = new byte[64];
        RefcountBlock.Set(block, order, index, value);
        Assert.Equal(expected, block[byteIndex]);
        Assert.Equal(value, RefcountBlock.Get(block, order, index));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    public void IndexOf_zero_and_non_zero_agrees_with_reading_entry_by_entry(int order)
    {
        var block = new byte[512];
        int entries = RefcountBlock.EntryCount(block.Length, order);
        var rng = new Random(order);
        // Runs of used and free entries, with values whose high bytes alone are non-zero (byte order matters there).
        for (int i = 0; i < entries;)
        {
            int run = rng.Next(1, 40);
            bool used = rng.Next(2) == 0;
            for (int k = 0; k < run && i < entries; k++, i++)
                RefcountBlock.Set(block, order, i, used ? RefcountBlock.MaxValue(order) & (order >= 4 ? 1UL << ((1 << order) - 1) : 1) : 0);
        }
        for (int from = 0; from < entries; from++)
            foreach (bool zero in new[] { true, false })
            {
                int expected = -1;
                for (int i = from; i < entries; i++)
                    if ((RefcountBlock.Get(block, order, i) == 0) == zero) { expected = i; break; }
                Assert.Equal(expected, RefcountBlock.IndexOf(block, order, from, zero));
            }
    }
}
