using System.Buffers.Binary;
using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Formats.Qcow2.Compression;
using Vdisk.Formats.Qcow2.OnDisk;
using Vdisk.Images;

namespace Vdisk.Tests.Crash;

public enum StepKind { Write, Read, Flush, MarkClean }

/// <summary>One guest request of an error scenario; writes carry <see cref="IoErrorPoints.Pattern"/> data.</summary>
public sealed record Step(StepKind Kind, long Offset = 0, int Length = 0, byte Tag = 0);

/// <summary>What a dry run of a scenario left, to aim a fault at a structure whose place depends on the run.</summary>
public sealed record DryRun(MemoryBlockDevice Base, QcowLayout Before, MemoryBlockDevice Final, QcowLayout After, IReadOnlyList<DeviceRecord> Records, int Armed)
{
    /// <summary>The Nth flush after the fault is armed that follows record <paramref name="index"/>.</summary>
    public int FlushAfter(int index) => Records.Take(index + 1).Skip(Armed).Count(r => r.Kind == RecordKind.Flush) + 1;
}

/// <summary>Where a fault goes: requests overlapping <see cref="Range"/> (any when null), the Nth of them.</summary>
public sealed record Aim((long Offset, long Length)? Range, int Nth = 1);

/// <summary>
/// One place where QEMU's blkdebug can inject an error (test 026's events), in Vdisk's terms: an image to start
/// from, the guest requests that reach the place, and how the fault is aimed, by the device range the request
/// touches. Ranges that depend on allocation come from a dry run of the same requests on a copy of the image:
/// the driver is deterministic, so the real run touches the same offsets.
/// </summary>
public sealed record IoErrorPoint(string Name, Func<bool, MemoryBlockDevice> Setup, Step[] Trigger, DeviceOperation Operation,
    Func<DryRun, Aim?> Target)
{
    /// <summary>
    /// Close and reopen the image between the marker and the trigger, so that tables the marker loaded (an
    /// in-place write checks its cluster's refcount) are read again by the trigger.
    /// </summary>
    public bool ReopenBeforeTrigger { get; init; }

    public override string ToString() => Name;
}

public static class IoErrorPoints
{
    public const int Cluster = 4096;
    public const long DiskSize = 8 << 20;
    /// <summary>Guest data every populated image holds; the marker is rewritten in place and flushed before the fault.</summary>
    public const long SetupLength = 128 << 10;
    public static readonly Step Marker = new(StepKind.Write, 64 << 10, 8 << 10, Tag: 0x4D);

    /// <summary>Periodic (so compressible) data that says which request wrote it.</summary>
    public static byte[] Pattern(long offset, int length, byte tag)
    {
        var data = new byte[length];
        for (int i = 0; i < length; i++) data[i] = (byte)(tag + (offset + i) % 251);
        return data;
    }

    public static MemoryBlockDevice Create(bool lazy, int cluster = Cluster, int refcountBits = 16)
    {
        var device = new MemoryBlockDevice(0, "errors.qcow2");
        new Qcow2Format().Create(device, new ImageCreateOptions
        {
            Size = DiskSize,
            Options = new Dictionary<string, string>
            {
                ["cluster_size"] = cluster.ToString(),
                ["lazy_refcounts"] = lazy ? "on" : "off",
                ["refcount_bits"] = refcountBits.ToString(),
            },
        });
        return device;
    }

    /// <summary>An image whose first 128 KiB hold data, and 64 KiB at 4 MiB (under another L2 table), closed cleanly.</summary>
    public static MemoryBlockDevice Populated(bool lazy)
    {
        var device = Create(lazy);
        using var image = Qcow2Image.Open(new BorrowedBlockDevice(device), new ImageOpenOptions());
        image.Write(0, Pattern(0, (int)SetupLength, 0x10).AsSpan());
        image.Write(FarData, Pattern(FarData, 64 << 10, 0x11).AsSpan());
        return device;
    }

    /// <summary>Data the marker does not touch, in an L2 table of its own that nothing loads before the trigger.</summary>
    public const long FarData = 4 << 20;

    /// <summary>As <see cref="Populated"/>, with guest cluster 0 stored compressed: a partial write to it must read it (COW read).</summary>
    public static MemoryBlockDevice WithCompressedCluster(bool lazy)
    {
        var device = Populated(lazy);
        var layout = QcowLayout.Read(device);
        long host = layout.HostCluster(device, 0);
        var compressed = new byte[Cluster];
        int n = ClusterCodec.Compress(Qcow2CompressionType.Zlib, Pattern(0, Cluster, 0x10), compressed);
        if (n <= 0 || n > Cluster - 512) throw new InvalidOperationException("setup pattern did not compress");
        device.Write(host, compressed.AsMemory(0, n));
        var entry = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(entry, L2Entry.MakeCompressed(host, (n + 511) / 512, 12));
        device.Write(layout.L2Tables[0], entry.AsMemory());
        return device;
    }

    /// <summary>512-byte clusters and 64-bit refcounts: a refcount block covers 32 KiB and the first table 2 MiB.</summary>
    public static MemoryBlockDevice Small(bool lazy) => Create(lazy, 512, 64);

    private static Step W(long offset, int length, byte tag = 0x20) => new(StepKind.Write, offset, length, tag);
    private static readonly Step F = new(StepKind.Flush);
    /// <summary>Writes the refcount blocks even with lazy refcounts, which otherwise keep them in the cache.</summary>
    private static readonly Step Clean = new(StepKind.MarkClean);
    private static Aim Cl(long offset) => new((offset, Cluster));

    /// <summary>Writes that carry a 512-byte-cluster image past 2 MiB, so that its refcount table must grow.</summary>
    private static Step[] Growth() => [.. Enumerable.Range(0, 12).Select(i => W(1 << 20 | (long)i << 18, 256 << 10, (byte)(0x30 + i))), F];

    /// <summary>The table a refcount-table growth switched to: the first 12-byte header write at offset 48.</summary>
    private static int SwitchRecord(DryRun d) =>
        d.Records.Select((r, i) => (r, i)).First(x => x.r.Kind == RecordKind.Write && x.r.Offset == HeaderField.RefcountTableOffset && x.r.Length == 12).i;

    private static Aim NewRefcountTable(DryRun d) => new(((long)BinaryPrimitives.ReadUInt64BigEndian(d.Records[SwitchRecord(d)].Data.Span), 512));

    /// <summary>
    /// The points, and how each is aimed: header and refcount-table switch by the header's byte range; L1 update by
    /// the L1 table's range; L2 and refcount-block load and update by the cluster of the existing table or block (read
    /// or write); L2 and refcount-block allocation by the cluster that the dry run shows as new; refcount-table growth
    /// by the new table's offset, read from the dry run's header switch; data writes and the COW write by the host
    /// cluster the dry run mapped the guest offset to; the COW read by the compressed cluster's byte range; flushes by
    /// count (the first after arming, or the one that made the dry run's table switch durable).
    /// </summary>
    public static IReadOnlyList<IoErrorPoint> All { get; } =
    [
        // The dirty bit goes into the header before the first L2 update (lazy refcounts); otherwise nothing here writes the header.
        new("header (dirty bit)", Populated, [W(256 << 10, 4096), F], DeviceOperation.Write, _ => new((0, 512))),
        new("L1 update", Populated, [W(2 << 20, 4096), F], DeviceOperation.Write, d => new((d.Before.L1Offset, d.Before.L2Tables.Length * 8))),
        new("L2 load", Populated, [new(StepKind.Read, FarData, 4096), W(FarData, 4096)], DeviceOperation.Read, d => Cl(d.Before.L2Tables[2])),
        new("L2 update", Populated, [W(256 << 10, 4096), F], DeviceOperation.Write, d => Cl(d.Before.L2Tables[0])),
        new("L2 allocation", Populated, [W(2 << 20, 4096), F], DeviceOperation.Write, d => Cl(d.After.L2Tables[1])),
        new("refcount block load", Populated, [W(256 << 10, 4096), F], DeviceOperation.Read, d => Cl(d.Before.RefcountBlocks[0])) { ReopenBeforeTrigger = true },
        new("refcount block update", Populated, [W(256 << 10, 4096), F, Clean], DeviceOperation.Write, d => Cl(d.Before.RefcountBlocks[0])),
        new("refcount block allocation", Small, [W(1 << 20, 64 << 10), F, Clean], DeviceOperation.Write,
            d => d.After.RefcountBlocks.Except(d.Before.RefcountBlocks).Order().Select(b => new Aim((b, 512))).FirstOrDefault()),
        new("refcount table growth", Small, Growth(), DeviceOperation.Write, NewRefcountTable),
        new("refcount table switch (header)", Small, Growth(), DeviceOperation.Write, _ => new((HeaderField.RefcountTableOffset, 12))),
        // The barrier that makes the switch durable: the new table must be followed even when it fails.
        new("refcount table switch flush", Small, Growth(), DeviceOperation.Flush, d => new(null, d.FlushAfter(SwitchRecord(d)))),
        new("data write (allocating)", Populated, [W(256 << 10, 4096), F], DeviceOperation.Write, d => Cl(d.After.HostCluster(d.Final, 256 << 10))),
        new("data write (in place)", Populated, [W(4096, 4096), F], DeviceOperation.Write, d => Cl(d.Before.HostCluster(d.Base, 4096))),
        new("COW read", WithCompressedCluster, [W(512, 512), F], DeviceOperation.Read, CompressedHost),
        new("COW write", WithCompressedCluster, [W(512, 512), F], DeviceOperation.Write, d => Cl(d.After.HostCluster(d.Final, 0))),
        new("flush", Populated, [W(256 << 10, 4096), F], DeviceOperation.Flush, _ => new(null)),
    ];

    /// <summary>Where the compressed cluster's data lies, from its L2 entry before the run.</summary>
    private static Aim CompressedHost(DryRun d)
    {
        var (offset, sectors) = new L2Entry(d.Before.L2Entry(d.Base, 0)).CompressedExtent(12);
        return new((offset, sectors * 512L));
    }
}
