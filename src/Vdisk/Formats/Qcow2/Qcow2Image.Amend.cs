using Vdisk.Formats.Qcow2.OnDisk;
using Vdisk.Images;

namespace Vdisk.Formats.Qcow2;

/// <summary>qemu-img amend's changes to an existing image: compat level and lazy refcounts, through UpdateHeader.</summary>
public sealed partial class Qcow2Image
{
    /// <summary>compat=1.1: v2 fields stay valid in v3; only the version and the header length change.</summary>
    public void UpgradeToV3()
    {
        if (_header.Version >= 3) return;
        UpdateHeader(h => { h.Version = 3; h.HeaderLength = HeaderField.V3Length; h.RefcountOrder = 4; });
    }

    /// <summary>
    /// compat=0.10: v2 has no zero flag, so zero clusters become unallocated where nothing lies below them, and
    /// clusters of written zeros otherwise; then the v3-only header parts go. Refused, with QEMU's wording, for
    /// what v2 cannot express.
    /// </summary>
    public void DowngradeToV2()
    {
        if (_header.Version == 2) return;
        if (_header.RefcountOrder != 4) throw Refuse("compat=0.10 requires refcount_bits=16");
        var blocking = _header.Incompatible & ~(IncompatibleFeatures.Dirty | IncompatibleFeatures.CompressionType);
        if (blocking != 0) throw Refuse($"Cannot downgrade an image with incompatible features 0x{(ulong)blocking:x} set");
        if (_header.CompressionType != 0) throw Refuse("Cannot downgrade an image with compression type other than zlib");
        if (_snapshots.Count > 0) throw Refuse("Cannot downgrade an image with internal snapshots (not supported by vdisk)");
        MarkClean();
        ExpandZeroClusters();
        MarkClean();
        UpdateHeader(h =>
        {
            h.Version = 2;
            h.Incompatible = IncompatibleFeatures.None;
            h.Compatible = 0;
            h.Autoclear = 0;
            h.HeaderLength = HeaderField.V2Length;
            h.UnknownFields = Array.Empty<byte>();
            h.CompressionType = 0;
        });
    }

    /// <summary>Turning lazy refcounts off first makes the refcounts current and the image clean.</summary>
    public void SetLazyRefcounts(bool on)
    {
        if (on && _header.Version < 3)
            throw Refuse("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
        if (_header.Compatible.HasFlag(CompatibleFeatures.LazyRefcounts) == on) return;
        if (!on) MarkClean();
        UpdateHeader(h => h.Compatible = on ? h.Compatible | CompatibleFeatures.LazyRefcounts : h.Compatible & ~CompatibleFeatures.LazyRefcounts);
    }

    /// <summary>
    /// refcount_bits: a complete structure of the new width goes past the end of the file and is made durable;
    /// then one header write switches refcount_order, the table offset and its size together. The old
    /// structure becomes free space (as after a rebuild).
    /// </summary>
    public void ChangeRefcountOrder(int order)
    {
        if (order == _header.RefcountOrder) return;
        if (_header.Version < 3)
            throw Refuse("Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");
        MarkClean();
        (long Offset, uint Clusters, long[] Table) written;
        _lock.Wait();
        try
        {
            var r = new ImageCheckResult();
            var scan = ScanReferencesAsync(r, CheckRepair.None, false, default).GetAwaiter().GetResult();
            if (r.Corruptions > 0 || r.CheckErrors > 0) throw Refuse("Cannot change the refcount width of an inconsistent image; run 'check -r all' first");
            ulong max = RefcountBlock.MaxValue(order);
            foreach (long c in scan.Counts.Referenced())
                if (scan.Counts[c] > max && !scan.OldRefcountStructure.Contains(c))
                    throw Refuse($"Cannot decrease refcount entry width to {1 << order} bits: Cluster at offset 0x{c << _clusterBits:x} has a refcount of {scan.Counts[c]}");
            written = WriteRefcountStructureAsync(scan, order, false, default).GetAwaiter().GetResult();
        }
        finally { Unlock(); }
        UpdateHeader(h =>
        {
            h.RefcountOrder = order;
            h.RefcountTableOffset = written.Offset;
            h.RefcountTableClusters = written.Clusters;
        });
        _lock.Wait();
        try { AdoptRefcountStructure(written.Offset, written.Clusters, written.Table); }
        finally { Unlock(); }
    }

    private void ExpandZeroClusters()
    {
        long clusters = (Size + ClusterSize - 1) >> _clusterBits;
        bool backed = _header.BackingFile is not null;
        for (long c = 0; c < clusters; c++)
        {
            if ((c & (L2Entries - 1)) == 0 && _l1[c >> _l2Bits] == 0) { c += L2Entries - 1; continue; }
            var kind = LookupLocked(c).Kind(_extended);
            if (kind == ClusterKind.ZeroPlain && !backed)
                ChangeEntryAsync(c, false, default, _ => (0, 0, false)).GetAwaiter().GetResult();
            else if (kind is ClusterKind.ZeroPlain or ClusterKind.ZeroAllocated)
            {
                long offset = c << _clusterBits;
                Write(offset, ZeroCluster[..(int)Math.Min(ClusterSize, Size - offset)]);
            }
        }
        Flush();
    }

    private L2Entry LookupLocked(long guestCluster)
    {
        _lock.Wait();
        try { return LookupAsync(guestCluster, false, default).GetAwaiter().GetResult(); }
        finally { Unlock(); }
    }

    private DiskImageException Refuse(string problem) => new(DiskImageErrorKind.UnsupportedFeature, Path, problem);
}
