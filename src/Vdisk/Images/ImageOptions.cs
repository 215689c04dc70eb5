using Vdisk.BlockIO;

namespace Vdisk.Images;

/// <summary>How to open an image (and, by default, its backing chain).</summary>
public sealed record ImageOpenOptions
{
    public bool ReadOnly { get; init; }
    public CacheMode Cache { get; init; } = CacheMode.Writeback;
    /// <summary>
    /// What others may do with the image while it is open here, QEMU's shared permissions, which the file's locks
    /// announce to every QEMU process and Vdisk handle. The default shares everything, as QEMU's tools do, and the
    /// format narrows it: qcow2 never shares write or resize, so a second writable open of a qcow2 image, in this
    /// process or another, fails with <see cref="DiskImageErrorKind.Locked"/>; a raw image shares what its user
    /// shares. <see cref="ImageSharing.ReadersOnly"/> keeps writers out of any format (qemu-img convert's sources).
    /// Backing files share writes only if this image does.
    /// </summary>
    public ImagePermissions Share { get; init; } = ImageSharing.AsFormatAllows;
    /// <summary>
    /// Take the resize permission at open, as qemu-img resize does, so that a user who forbids resizing is found
    /// before anything changes; formats that grow their file (qcow2) take it whenever they are writable.
    /// </summary>
    public bool ForResize { get; init; }
    /// <summary>
    /// Open read-only whatever others do with the image, and let them do anything (qemu-img's -U, --force-share):
    /// takes no lock that could stop a writer, and is refused for a writable open. What is read may be inconsistent
    /// while someone writes.
    /// </summary>
    public bool ForceShare { get; init; }
    /// <summary>Format name; null probes the file's magic, as QEMU does.</summary>
    public string? Format { get; init; }
    /// <summary>An internal snapshot (ID or name) to open read-only instead of the active image (qemu-img's -l).</summary>
    public string? Snapshot { get; init; }
    /// <summary>Do not open the backing file (qemu-img info does not need it).</summary>
    public bool NoBacking { get; init; }
    /// <summary>
    /// Open for a consistency check (qemu-img check): a corrupt or dirty image may be opened read-write so that
    /// it can be repaired, and nothing is repaired automatically.
    /// </summary>
    public bool ForCheck { get; init; }
    /// <summary>Receives what the driver reports while opening, e.g. the lines of an automatic repair (QEMU prints them on stderr).</summary>
    public Action<string>? Messages { get; init; }
    /// <summary>Format-specific runtime options, QEMU style (e.g. "l2-cache-size").</summary>
    public IReadOnlyDictionary<string, string> Options { get; init; } = new Dictionary<string, string>();
    /// <summary>
    /// Opens a backing file instead of the file system: given the backing file's name resolved against the image's
    /// folder and the options to open it with (read-only, its format), returns the opened image. Null opens the file.
    /// For chains that do not live in files, e.g. images in memory.
    /// </summary>
    public Func<string, ImageOpenOptions, DiskImage>? BackingOpener { get; init; }
    /// <summary>Registry used to resolve formats of this image and its backing files.</summary>
    public ImageFormatRegistry Registry { get; init; } = ImageFormatRegistry.Default;
    /// <summary>Files already open further up the chain, to refuse a chain that loops back on itself.</summary>
    internal IReadOnlyList<string> OpenChain { get; init; } = Array.Empty<string>();
    /// <summary>The format was found by probing, not given: a raw image then guards its first sector (see RawImage).</summary>
    internal bool FormatProbed { get; init; }
    /// <summary>Opened as the backing file of another image: read for copy-on-write, which no writer or resize may disturb.</summary>
    internal bool AsBacking { get; init; }
}

/// <summary>How to create an image: its size and the qemu-img -o options, as text.</summary>
public sealed record ImageCreateOptions
{
    public long Size { get; init; }
    public IReadOnlyDictionary<string, string> Options { get; init; } = new Dictionary<string, string>();
    public ImageFormatRegistry Registry { get; init; } = ImageFormatRegistry.Default;
    public string? Get(string key) => Options.TryGetValue(key, out var v) ? v : null;
}
