using System.Buffers.Binary;
using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2.OnDisk;
using Vdisk.Images;

namespace Vdisk.Formats.Qcow2;

/// <summary>The qcow2 driver: probing by magic, opening, and creating images laid out as qemu-img lays them out.</summary>
public sealed class Qcow2Format : ImageFormat
{
    public override string Name => "qcow2";
    public override IReadOnlyCollection<string> CreateOptionNames => Qcow2CreateOptions.Names;

    public override int Probe(ReadOnlySpan<byte> header, string? path) =>
        header.Length >= 8 && BinaryPrimitives.ReadUInt32BigEndian(header) == Qcow2Header.MagicValue
        && BinaryPrimitives.ReadUInt32BigEndian(header[4..]) >= 2 ? 100 : 0;

    public override DiskImage Open(BlockDevice device, ImageOpenOptions options) => Qcow2Image.Open(device, options);

    public override void CheckCreateOptions(ImageCreateOptions options, string path) => Qcow2CreateOptions.Parse(options, path);

    public override void Create(BlockDevice device, ImageCreateOptions options)
    {
        var o = Qcow2CreateOptions.Parse(options, device.Name);
        // As qemu-img, the virtual size is rounded up to whole 512-byte sectors (1234 becomes 1536).
        o = o with { Size = (o.Size + 511) & ~511L };
        if (o.Size == 0 && o.BackingFile is not null)
        {
            using var backing = DiskImages.OpenBacking(device.Name, o.BackingFile, o.BackingFormat, new ImageOpenOptions { NoBacking = true, ForceShare = true });
            o = o with { Size = backing.Size };
        }
        WriteEmptyImage(device, o);
        if (o.Preallocation != "off")
        {
            using var image = Qcow2Image.Open(new BorrowedBlockDevice(device), new ImageOpenOptions { NoBacking = true });
            image.Preallocate(o.Preallocation);
        }
    }

    /// <summary>
    /// Header in cluster 0, then the refcount table, the refcount blocks covering all of this, and the L1 table:
    /// with default options that is qemu-img's layout (table at 0x10000, block at 0x20000, L1 at 0x30000).
    /// </summary>
    private static void WriteEmptyImage(BlockDevice device, Qcow2CreateOptions o)
    {
        var header = new Qcow2Header
        {
            Version = (uint)o.Version,
            ClusterBits = System.Numerics.BitOperations.Log2((uint)o.ClusterSize),
            Size = o.Size,
            RefcountOrder = System.Numerics.BitOperations.Log2((uint)o.RefcountBits),
            CompressionType = o.CompressionType,
            BackingFile = o.BackingFile,
            HeaderLength = o.Version == 2 ? (uint)HeaderField.V2Length : (uint)HeaderField.V3Length,
        };
        if (o.CompressionType != 0) header.Incompatible |= IncompatibleFeatures.CompressionType;
        if (o.ExtendedL2) header.Incompatible |= IncompatibleFeatures.ExtendedL2;
        if (o.LazyRefcounts) header.Compatible |= CompatibleFeatures.LazyRefcounts;
        if (o.BackingFormat is not null) header.Extensions.Add(HeaderExtension.Text(HeaderExtension.BackingFormat, o.BackingFormat));
        if (o.Version >= 3) header.Extensions.Add(HeaderExtension.FeatureTable());

        long cluster = o.ClusterSize;
        long l1Entries = header.L1EntriesFor(o.Size);
        if (l1Entries * 8 > Qcow2Header.MaxL1Bytes)
            throw new DiskImageException(DiskImageErrorKind.InvalidArgument, device.Name, "Image size is too large for this cluster size");
        long l1Clusters = (l1Entries * 8 + cluster - 1) / cluster;
        long refsPerBlock = cluster * 8 / o.RefcountBits;
        long tableClusters = 1, blocks = 1;
        while (true)
        {
            long total = 1 + tableClusters + blocks + l1Clusters;
            long neededBlocks = (total + refsPerBlock - 1) / refsPerBlock;
            long neededTable = (neededBlocks * 8 + cluster - 1) / cluster;
            if (neededBlocks <= blocks && neededTable <= tableClusters) break;
            blocks = Math.Max(blocks, neededBlocks);
            tableClusters = Math.Max(tableClusters, neededTable);
        }
        long tableOffset = cluster;
        long blocksOffset = tableOffset + tableClusters * cluster;
        long l1Offset = blocksOffset + blocks * cluster;
        header.RefcountTableOffset = tableOffset;
        header.RefcountTableClusters = (uint)tableClusters;
        header.L1TableOffset = l1Offset;
        header.L1Size = (uint)l1Entries;

        var headerBytes = header.Serialize();
        if (headerBytes.Length > cluster)
            throw new DiskImageException(DiskImageErrorKind.InvalidArgument, device.Name, "Header extensions and backing file name do not fit in the first cluster");
        var table = new byte[tableClusters * cluster];
        for (long i = 0; i < blocks; i++) BinaryPrimitives.WriteUInt64BigEndian(table.AsSpan((int)(i * 8)), (ulong)(blocksOffset + i * cluster));
        var blockBytes = new byte[blocks * cluster];
        long used = 1 + tableClusters + blocks + l1Clusters;
        int order = header.RefcountOrder;
        for (long c = 0; c < used; c++)
            RefcountBlock.Set(blockBytes.AsSpan((int)(c / refsPerBlock * cluster), (int)cluster), order, (int)(c % refsPerBlock), 1);

        device.SetLength(0);
        device.Write(0, headerBytes.AsMemory());
        device.Write(tableOffset, table.AsMemory());
        device.Write(blocksOffset, blockBytes.AsMemory());
        if (l1Entries > 0) device.Write(l1Offset, new byte[l1Entries * 8].AsMemory());
        else device.SetLength(l1Offset);
        device.Flush();
    }
}
