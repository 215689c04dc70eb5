using System.Globalization;
using System.Text;
using Vdisk.Images;

namespace Vdisk.Cli.Output;

/// <summary>qemu's snapshot listing (bdrv_snapshot_dump's columns) and qemu-img info's JSON for one snapshot.</summary>
internal static class SnapshotTable
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>"Snapshot list:", the column header and one row per snapshot, every line ending in a newline.</summary>
    public static string ToHuman(IReadOnlyList<SnapshotInfo> snapshots)
    {
        var sb = new StringBuilder("Snapshot list:\n");
        sb.Append(string.Format(Inv, "{0,-10}{1,-17}{2,8}{3,20}{4,13}{5,11}\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT"));
        foreach (var s in snapshots) sb.Append(Row(s)).Append('\n');
        return sb.ToString();
    }

    private static string Row(SnapshotInfo s)
    {
        // Local time, as QEMU's localtime_r.
        var date = DateTimeOffset.FromUnixTimeSeconds(s.DateSeconds).ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", Inv);
        ulong secs = s.VmClockNanoseconds / 1_000_000_000;
        string clock = string.Format(Inv, "{0:00}:{1:00}:{2:00}.{3:000}", (int)(secs / 3600), (int)(secs / 60 % 60), (int)(secs % 60),
            (int)(s.VmClockNanoseconds / 1_000_000 % 1000));
        string icount = s.Icount == -1 ? "" : s.Icount.ToString(Inv);
        return string.Format(Inv, "{0,-9} {1,-16} {2,8}{3,20}{4,13}{5,11}", s.Id, s.Name, Sizes.ToHuman(s.VmStateSize), date, clock, icount);
    }

    /// <summary>One element of qemu-img info's "snapshots" array, members in qemu's order.</summary>
    public static JsonObject ToJson(SnapshotInfo s)
    {
        var o = new JsonObject();
        if (s.Icount != -1) o.Add("icount", s.Icount);
        o.Add("vm-clock-nsec", (long)(s.VmClockNanoseconds % 1_000_000_000));
        o.Add("name", s.Name);
        o.Add("date-sec", (long)s.DateSeconds);
        o.Add("date-nsec", (long)s.DateNanoseconds);
        o.Add("vm-clock-sec", (long)(s.VmClockNanoseconds / 1_000_000_000));
        o.Add("id", s.Id);
        o.Add("vm-state-size", s.VmStateSize);
        return o;
    }
}
