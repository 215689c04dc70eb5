namespace Vdisk.Images;

/// <summary>What to repair during a consistency check (qemu-img check -r).</summary>
[Flags]
public enum CheckRepair
{
    None = 0,
    /// <summary>-r leaks: lower refcounts that are too high.</summary>
    Leaks = 1,
    /// <summary>-r all: also raise refcounts that are too low, rebuild the refcount structure, fix COPIED flags.</summary>
    Errors = 2,
    All = Leaks | Errors,
}

/// <summary>The findings of a consistency check, with qemu-img check's counters.</summary>
public sealed class ImageCheckResult
{
    public int Corruptions { get; set; }
    public int Leaks { get; set; }
    public int CheckErrors { get; set; }
    public int CorruptionsFixed { get; set; }
    public int LeaksFixed { get; set; }
    public long ImageEndOffset { get; set; }
    /// <summary>Guest clusters of the virtual disk.</summary>
    public long TotalClusters { get; set; }
    public long AllocatedClusters { get; set; }
    public long FragmentedClusters { get; set; }
    public long CompressedClusters { get; set; }
    /// <summary>The per-finding lines qemu-img prints on stderr ("Leaked cluster 5 refcount=1 reference=0", ...).</summary>
    public List<string> Messages { get; } = new();

    public bool IsClean => Corruptions == 0 && Leaks == 0 && CheckErrors == 0;
}
