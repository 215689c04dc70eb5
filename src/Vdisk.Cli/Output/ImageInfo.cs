using System.Text;
using Vdisk.Images;

namespace Vdisk.Cli.Output;

/// <summary>What qemu-img info reports about one image, and its human and JSON renderings.</summary>
internal sealed record ImageInfo(
    string Filename, string Format, long VirtualSize, long ActualSize, int ClusterSize,
    string? BackingFilename, string? FullBackingFilename, string? BackingFormat, bool Dirty,
    IReadOnlyList<InfoField> FormatSpecific, IReadOnlyList<SnapshotInfo> Snapshots)
{
    public static ImageInfo From(DiskImage image, string filename)
    {
        string? backing = image.BackingFileName;
        return new ImageInfo(filename, image.FormatName, image.Size, image.Device.GetAllocatedSize(), image.ClusterSize,
            backing, backing is null ? null : DiskImages.ResolveBackingPath(filename, backing), image.BackingFormatName,
            image.IsDirty, image.FormatSpecificInfo, image.Snapshots);
    }

    /// <summary>qemu-img info's JSON object, members in qemu's order.</summary>
    public JsonObject ToJson()
    {
        var o = new JsonObject();
        if (Snapshots.Count > 0) o.Add("snapshots", Snapshots.Select(s => (object)SnapshotTable.ToJson(s)).ToList());
        if (BackingFormat is not null) o.Add("backing-filename-format", BackingFormat);
        o.Add("virtual-size", VirtualSize);
        o.Add("filename", Filename);
        if (ClusterSize > 0) o.Add("cluster-size", ClusterSize);
        o.Add("format", Format);
        o.Add("actual-size", ActualSize);
        if (FormatSpecific.Count > 0)
        {
            var data = new JsonObject();
            foreach (var f in FormatSpecific) data.Add(f.JsonName, f.Value);
            o.Add("format-specific", new JsonObject { { "type", Format }, { "data", data } });
        }
        if (BackingFilename is not null)
        {
            o.Add("full-backing-filename", FullBackingFilename!);
            o.Add("backing-filename", BackingFilename);
        }
        o.Add("dirty-flag", Dirty);
        return o;
    }

    /// <summary>qemu-img info's human text, every line ending in a newline.</summary>
    public string ToHuman()
    {
        var sb = new StringBuilder();
        sb.Append("image: ").Append(Filename).Append('\n');
        sb.Append("file format: ").Append(Format).Append('\n');
        sb.Append($"virtual size: {Sizes.ToHuman(VirtualSize)} ({VirtualSize} bytes)\n");
        sb.Append("disk size: ").Append(Sizes.ToHuman(ActualSize)).Append('\n');
        if (ClusterSize > 0) sb.Append("cluster_size: ").Append(ClusterSize).Append('\n');
        if (Dirty) sb.Append("cleanly shut down: no\n");
        if (BackingFilename is not null)
        {
            sb.Append("backing file: ").Append(BackingFilename);
            if (FullBackingFilename != BackingFilename) sb.Append(" (actual path: ").Append(FullBackingFilename).Append(')');
            sb.Append('\n');
            if (BackingFormat is not null) sb.Append("backing file format: ").Append(BackingFormat).Append('\n');
        }
        if (Snapshots.Count > 0) sb.Append(SnapshotTable.ToHuman(Snapshots));
        if (FormatSpecific.Count > 0)
        {
            sb.Append("Format specific information:\n");
            foreach (var f in FormatSpecific)
                sb.Append("    ").Append(f.HumanName).Append(": ").Append(HumanValue(f.Value)).Append('\n');
        }
        return sb.ToString();
    }

    private static string HumanValue(object value) => value switch
    {
        bool b => b ? "true" : "false",
        _ => Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture) ?? "",
    };
}
