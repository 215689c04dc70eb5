using System.Buffers.Binary;
using Vdisk.Formats.Qcow2.OnDisk;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Tests.Formats.Qcow2;

/// <summary>Snapshot table entries: our layout, older (shorter) extra data, unknown extra data kept, limits.</summary>
public class SnapshotEntryTests
{
    [Fact]
    public void RoundTripKeepsEveryFieldAndUnknownExtraData()
    {
        var e = new SnapshotEntry
        {
            L1TableOffset = 0x50000, L1Size = 3, Id = "12", Name = "tag with spaces", DateSeconds = 1_700_000_000,
            DateNanoseconds = 123, VmClockNanoseconds = 5_000_000_001, VmStateSize = 5L << 30, DiskSize = 1L << 40, Icount = -1,
            UnknownExtra = new byte[] { 1, 2, 3, 4, 5 },
        };
        var bytes = SnapshotEntry.SerializeTable(new[] { e });
        Assert.Equal(0, bytes.Length % 8);
        Assert.Equal(24u + 5, BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(SnapshotField.ExtraDataSize)));
        // The 32-bit field holds what fits; the 64-bit one the whole size.
        Assert.Equal(unchecked((uint)(5L << 30)), BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(SnapshotField.VmStateSize)));
        var (back, length) = SnapshotEntry.TryParse(bytes, 0, 0, "t")!.Value;
        Assert.Equal(bytes.Length, length);
        Assert.Equal((e.L1TableOffset, e.L1Size, e.Id, e.Name, e.DateSeconds, e.DateNanoseconds, e.VmClockNanoseconds, e.VmStateSize, e.DiskSize, e.Icount),
            (back.L1TableOffset, back.L1Size, back.Id, back.Name, back.DateSeconds, back.DateNanoseconds, back.VmClockNanoseconds, back.VmStateSize, back.DiskSize, back.Icount));
        Assert.Equal(e.UnknownExtra, back.UnknownExtra);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(8)]
    [InlineData(16)]
    public void ShortExtraDataReadsWhatIsThereAndDefaultsTheRest(int extra)
    {
        var raw = new byte[(40 + extra + 1 + 1 + 7) & ~7];
        BinaryPrimitives.WriteUInt16BigEndian(raw.AsSpan(SnapshotField.IdLength), 1);
        BinaryPrimitives.WriteUInt16BigEndian(raw.AsSpan(SnapshotField.NameLength), 1);
        BinaryPrimitives.WriteUInt32BigEndian(raw.AsSpan(SnapshotField.VmStateSize), 4096);
        BinaryPrimitives.WriteUInt32BigEndian(raw.AsSpan(SnapshotField.ExtraDataSize), (uint)extra);
        if (extra >= 8) BinaryPrimitives.WriteUInt64BigEndian(raw.AsSpan(40), 8192);
        if (extra >= 16) BinaryPrimitives.WriteUInt64BigEndian(raw.AsSpan(48), 777);
        raw[40 + extra] = (byte)'1';
        raw[41 + extra] = (byte)'a';
        var (e, length) = SnapshotEntry.TryParse(raw, 0, currentSize: 999, "t")!.Value;
        Assert.Equal(raw.Length, length);
        Assert.Equal(extra >= 8 ? 8192 : 4096, e.VmStateSize);
        Assert.Equal(extra >= 16 ? 777 : 999, e.DiskSize);
        Assert.Equal(-1, e.Icount);
        Assert.Equal(("1", "a"), (e.Id, e.Name));
    }

    [Fact]
    public void TooMuchExtraDataIsRefusedAndTruncatedEntriesAskForMore()
    {
        var raw = new byte[48];
        BinaryPrimitives.WriteUInt32BigEndian(raw.AsSpan(SnapshotField.ExtraDataSize), 65536);
        var ex = Assert.Throws<DiskImageException>(() => SnapshotEntry.TryParse(raw, 0, 0, "t"));
        Assert.Contains("Too much extra metadata in snapshot table entry 0", ex.Message);
        BinaryPrimitives.WriteUInt32BigEndian(raw.AsSpan(SnapshotField.ExtraDataSize), 24);
        Assert.Null(SnapshotEntry.TryParse(raw, 0, 0, "t"));
        Assert.Null(SnapshotEntry.TryParse(raw.AsSpan(0, 39), 0, 0, "t"));
        // The last entry's padding may be missing at the end of the file: 40 + 24 + 1 + 1 bytes suffice.
        var unpadded = new byte[66];
        BinaryPrimitives.WriteUInt32BigEndian(unpadded.AsSpan(SnapshotField.ExtraDataSize), 24);
        BinaryPrimitives.WriteUInt16BigEndian(unpadded.AsSpan(SnapshotField.IdLength), 1);
        BinaryPrimitives.WriteUInt16BigEndian(unpadded.AsSpan(SnapshotField.NameLength), 1);
        Assert.Equal(72, SnapshotEntry.TryParse(unpadded, 0, 0, "t")!.Value.Length);
    }
}
