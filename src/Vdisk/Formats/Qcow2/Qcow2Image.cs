using System.Buffers.Binary;
using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2.OnDisk;
using Vdisk.Images;

namespace Vdisk.Formats.Qcow2;

/// <summary>
/// A qcow2 image (v2 and v3). Metadata (L1, L2 cache, refcounts) is guarded by one async lock; guest data moves
/// outside it. A cluster being allocated is registered as in flight so that a second request for the same
/// guest cluster waits instead of allocating it again.
/// </summary>
public sealed partial class Qcow2Image : DiskImage
{
    private readonly Qcow2Header _header;
    private readonly SemaphoreSlim _lock = new(1, 1);
    // Replaced (under the lock) when the active L1 table moves: growth, snapshot apply.
    private long[] _l1;
    private List<SnapshotEntry> _snapshots = new();
    private readonly SortedSet<int> _dirtyL1 = new();
    private readonly TableCache _l2Cache;
    private RefcountTable _refcounts;
    private readonly OverlapChecker _overlap;
    private readonly Dictionary<long, TaskCompletionSource> _inFlight = new();
    private readonly int _clusterBits;
    private readonly int _l2Bits;
    private readonly bool _extended;
    private readonly bool _writeThrough;
    /// <summary>Lazy refcounts in use: refcount blocks may lag behind L2 tables while the dirty bit is set.</summary>
    private readonly bool _lazyRefcounts;
    private bool _corrupt;

    private Qcow2Image(BlockDevice device, bool readOnly, Qcow2Header header, long[] l1, long[] reftable, ImageOpenOptions options)
        : base(device, readOnly)
    {
        _header = header;
        _l1 = l1;
        _clusterBits = header.ClusterBits;
        _l2Bits = header.L2Bits;
        _extended = header.ExtendedL2;
        _writeThrough = options.Cache.IsWriteThrough();
        // Every guest request ends with a flush here, and metadata is ordered by explicit barriers.
        if (_writeThrough && !readOnly) device.LeaveWriteThroughToCaller();
        _lazyRefcounts = !readOnly && header.Version >= 3 && header.Compatible.HasFlag(CompatibleFeatures.LazyRefcounts)
            && !(options.Options.TryGetValue("lazy-refcounts", out var lazy) && lazy == "off");
        Size = header.Size;
        _overlap = new OverlapChecker(_clusterBits);
        _overlap.SetRange(MetadataKind.Header, 0, ClusterSize);
        _overlap.SetRange(MetadataKind.ActiveL1, header.L1TableOffset, header.L1Size * 8L);
        _overlap.SetRange(MetadataKind.RefcountTable, header.RefcountTableOffset, (long)header.RefcountTableClusters << _clusterBits);
        foreach (long e in l1)
            if ((e & (long)Entry.L1OffsetMask) != 0) _overlap.AddCluster(e & (long)Entry.L1OffsetMask, MetadataKind.ActiveL2);

        var (l2Tables, refTables) = CacheSizes(options, header);
        _refcounts = new RefcountTable(device, header, reftable, _overlap, refTables, SwitchRefcountTableAsync, SignalCorruption) { ClusterFreed = OnClusterFreed };
        _l2Cache = new TableCache(device, ClusterSize, l2Tables, WriteBackRefcountsFirstAsync, CheckL2Write);
    }

    public override string FormatName => "qcow2";
    public override int ClusterSize => 1 << _clusterBits;
    public override string? BackingFileName => _header.BackingFile;
    public override string? BackingFormatName => _header.BackingFormat;
    public override bool IsDirty => _header.Incompatible.HasFlag(IncompatibleFeatures.Dirty);
    public bool IsCorrupt => _corrupt || _header.Incompatible.HasFlag(IncompatibleFeatures.Corrupt);
    /// <summary>The parsed header; read-only use.</summary>
    public Qcow2Header Header => _header;
    internal int L2CacheCapacity => _l2Cache.Capacity;
    internal long L2CacheMisses => _l2Cache.Misses;

    public override IReadOnlyList<InfoField> FormatSpecificInfo
    {
        get
        {
            var fields = new List<InfoField> { new("compat", "compat", _header.Version == 2 ? "0.10" : "1.1") };
            if (_header.Version >= 3)
            {
                fields.Add(new("compression-type", "compression type", _header.CompressionType == 1 ? "zstd" : "zlib"));
                fields.Add(new("lazy-refcounts", "lazy refcounts", _header.Compatible.HasFlag(CompatibleFeatures.LazyRefcounts)));
            }
            fields.Add(new("refcount-bits", "refcount bits", _header.RefcountBits));
            if (_header.Version >= 3)
            {
                fields.Add(new("corrupt", "corrupt", IsCorrupt));
                fields.Add(new("extended-l2", "extended l2", _extended));
            }
            return fields;
        }
    }

    /// <summary>Opens a qcow2 image on a device (taking ownership of it); with <c>options.Snapshot</c>, one of its snapshots, read-only.</summary>
    public static Qcow2Image Open(BlockDevice device, ImageOpenOptions options)
    {
        string path = device.Name;
        long fileLength = device.Length;
        var probe = new byte[(int)Math.Min(fileLength, HeaderField.V3MinLength)];
        device.Read(0, probe.AsMemory());
        if (probe.Length < 4 || BinaryPrimitives.ReadUInt32BigEndian(probe) != Qcow2Header.MagicValue)
            throw new DiskImageException(DiskImageErrorKind.InvalidFormat, path, "Image is not in qcow2 format");
        // A truncated file with the right magic: say so, as QEMU does for a v3 header cut short.
        if (probe.Length < HeaderField.V2Length)
            throw new DiskImageException(DiskImageErrorKind.InvalidFormat, path, "qcow2 header too short");
        int bits = (int)Math.Clamp(BinaryPrimitives.ReadUInt32BigEndian(probe.AsSpan(HeaderField.ClusterBits)), Qcow2Header.MinClusterBits, Qcow2Header.MaxClusterBits);
        var cluster0 = new byte[(int)Math.Min(fileLength, 1L << bits)];
        device.Read(0, cluster0.AsMemory());
        var header = Qcow2Header.Parse(cluster0, path);

        bool readOnly = options.ReadOnly || device.IsReadOnly;
        if (!readOnly && !options.ForCheck && header.Incompatible.HasFlag(IncompatibleFeatures.Corrupt))
            throw new DiskImageException(DiskImageErrorKind.CorruptImage, path, "qcow2: Image is corrupt; cannot be opened read/write");
        if (header.Incompatible.HasFlag(IncompatibleFeatures.ExternalDataFile))
            throw new DiskImageException(DiskImageErrorKind.UnsupportedFeature, path, "'data-file' is required for this image (external data files are not supported)");

        var (snapshots, snapshotTableBytes) = LoadSnapshotTable(device, header, options.ForCheck);
        SnapshotEntry? view = null;
        if (options.Snapshot is { } wanted)
        {
            view = FindSnapshot(snapshots, wanted) ?? throw new DiskImageException(DiskImageErrorKind.NotFound, path,
                $"Failed to load snapshot: Can't find snapshot '{wanted}'");
            ValidateSnapshotL1(view, header, fileLength, path);
            // The snapshot's own L1 table and size stand in for the active ones; nothing is ever written.
            header.L1TableOffset = view.L1TableOffset;
            header.L1Size = view.L1Size;
            header.Size = view.DiskSize;
            readOnly = true;
        }
        var l1 = LoadL1(device, header);
        var reftable = RefcountTable.LoadTableAsync(device, header, false).GetAwaiter().GetResult();
        var image = new Qcow2Image(device, readOnly, header, l1, reftable, options);
        image._snapshots = snapshots;
        image._snapshotTableBytes = snapshotTableBytes;
        image._viewedSnapshot = view;
        image.UpdateSnapshotOverlapRanges();
        try
        {
            if (!readOnly) image.ClearUnknownAutoclearBits();
            if (!readOnly && !options.ForCheck && header.Incompatible.HasFlag(IncompatibleFeatures.Dirty))
                image.RepairDirtyImage(options);
            if (header.BackingFile is not null && !options.NoBacking)
                image.Backing = DiskImages.OpenBacking(path, header.BackingFile, header.BackingFormat, options);
        }
        catch
        {
            image.Abandon();
            throw;
        }
        return image;
    }

    private static long[] LoadL1(BlockDevice device, Qcow2Header header)
    {
        var raw = new byte[header.L1Size * 8L];
        device.Read(header.L1TableOffset, raw.AsMemory());
        var l1 = new long[header.L1Size];
        for (int i = 0; i < l1.Length; i++) l1[i] = (long)BinaryPrimitives.ReadUInt64BigEndian(raw.AsSpan(i * 8));
        return l1;
    }

    /// <summary>L2 and refcount cache capacities in tables, from QEMU's options (bytes) or QEMU's defaults.</summary>
    private static (int L2, int Refcount) CacheSizes(ImageOpenOptions options, Qcow2Header header)
    {
        long cluster = header.ClusterSize;
        // By default cache enough L2 tables for the whole disk, up to 32 MiB, as QEMU does on Linux.
        long wholeDisk = Math.Max(1, header.L1EntriesFor(header.Size)) * cluster;
        long l2Bytes = Math.Min(wholeDisk, 32L << 20);
        long refBytes = 4 * cluster;
        if (options.Options.TryGetValue("cache-size", out var total) && long.TryParse(total, out long t))
        {
            l2Bytes = Math.Min(wholeDisk, t * 3 / 4);
            refBytes = Math.Max(t - l2Bytes, 4 * cluster);
        }
        if (options.Options.TryGetValue("l2-cache-size", out var l2) && long.TryParse(l2, out long l2v)) l2Bytes = l2v;
        if (options.Options.TryGetValue("refcount-cache-size", out var rc) && long.TryParse(rc, out long rcv)) refBytes = rcv;
        return ((int)Math.Clamp(l2Bytes / cluster, 2, int.MaxValue), (int)Math.Clamp(refBytes / cluster, 2, int.MaxValue));
    }

    private void ClearUnknownAutoclearBits()
    {
        // We do not maintain persistent bitmaps, so their data stops being consistent as soon as we write.
        var keep = _header.Autoclear & AutoclearFeatures.RawExternalData;
        if (_header.Autoclear == keep) return;
        _header.Autoclear = keep;
        var raw = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(raw, (ulong)keep);
        Device.Write(HeaderField.AutoclearFeatures, raw.AsMemory());
        Device.Flush();
    }

    private ValueTask LockAsync(bool async, CancellationToken ct)
    {
        if (async) return new ValueTask(_lock.WaitAsync(ct));
        _lock.Wait(ct);
        return ValueTask.CompletedTask;
    }

    private void Unlock() => _lock.Release();

    protected override async ValueTask CloseCoreAsync(bool async)
    {
        if (IsReadOnly || _corrupt) return;
        await LockAsync(async, default).ConfigureAwait(false);
        try
        {
            await FlushMetadataLockedAsync(async, default).ConfigureAwait(false);
            if (_lazyRefcounts) await MarkCleanLockedAsync(async, default).ConfigureAwait(false);
        }
        finally { Unlock(); }
    }
}
