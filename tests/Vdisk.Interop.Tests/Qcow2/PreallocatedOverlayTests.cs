using Xunit;

namespace Vdisk.Interop.Tests.Qcow2;

/// <summary>
/// Preallocated images with extended L2 entries, created or grown by vdisk and by qemu-img, hold the same L2 entries
/// (host cluster assigned, subclusters left as they were), so an overlay keeps reading its backing file; later partial
/// writes copy the rest of the touched subclusters from the backing file, as QEMU's do.
/// </summary>
public class PreallocatedOverlayTests
{
    private static string Map(string path) => Qemu.MustRun("qemu-img", "map", "--output=json", path).StdOut;

    private static void MustRead(string path, params string[] reads)
    {
        var args = reads.SelectMany(r => new[] { "-c", "read -q " + r }).Append(path).ToArray();
        var q = Qemu.MustRun("qemu-io", args);
        Assert.DoesNotContain("verification failed", q.StdOut);
        var v = Tools.Vdisk(new[] { "io" }.Concat(args).ToArray());
        Assert.True(v.ExitCode == 0, v.ToString());
        Assert.DoesNotContain("verification failed", v.StdOut);
    }

    [Theory]
    [InlineData("metadata", true)]
    [InlineData("falloc", true)]
    [InlineData("full", true)]
    [InlineData("metadata", false)]
    [InlineData("falloc", false)]
    [InlineData("full", false)]
    public void CreatedOverlayReadsItsBackingFileAndMatchesQemuAfterPartialWrites(string mode, bool backing)
    {
        using var dir = new TempDir();
        var basePath = dir.File("base.qcow2");
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", basePath, "8M");
        Qemu.MustRun("qemu-io", "-c", "write -q -P 0xab 0 6M", basePath);
        string q = dir.File("q.qcow2"), v = dir.File("v.qcow2");
        var create = new List<string> { "create", "-q", "-f", "qcow2", "-o", $"extended_l2=on,cluster_size=128k,preallocation={mode}" };
        if (backing) create.AddRange(["-F", "qcow2", "-b", "base.qcow2"]);
        Qemu.MustRun("qemu-img", create.Append(q).Append("10M").ToArray());
        var made = Tools.Vdisk(create.Append(v).Append("10M").ToArray());
        Assert.True(made.ExitCode == 0, made.ToString());

        // Same L2 entries, host offsets included (the layout of a new image is qemu-img's), and the same map.
        Assert.Equal(L2Dump.Entries(q, withHostOffsets: true), L2Dump.Entries(v, withHostOffsets: true));
        Assert.Equal(Map(q), Map(v));
        Assert.Equal(Map(q), Tools.Vdisk("map", "--output=json", v).StdOut);
        if (backing) MustRead(v, "-P 0xab 0 6M", "-P 0 6M 4M");
        else MustRead(v, "-P 0 0 10M");

        // Partial writes into preallocated clusters: inside one subcluster, across the end of the base's data,
        // past the base's end, and write-zeroes of part of a cluster.
        string[] ops = ["write -q -P 0x11 5k 2k", "write -q -P 0x22 6142k 4k", "write -q -P 0x33 9M 100", "write -q -z 2M 8k"];
        Qemu.MustRun("qemu-io", ops.SelectMany(o => new[] { "-c", o }).Append(q).ToArray());
        var wrote = Tools.Vdisk(new[] { "io" }.Concat(ops.SelectMany(o => new[] { "-c", o })).Append(v).ToArray());
        Assert.True(wrote.ExitCode == 0, wrote.ToString());

        Qemu.MustRun("qemu-img", "check", v);
        Assert.Equal(0, Tools.Run("qemu-img", "compare", q, v).ExitCode);
        Assert.Equal(L2Dump.Entries(q, withHostOffsets: true), L2Dump.Entries(v, withHostOffsets: true));
        Assert.Equal(Map(q), Map(v));
        byte fill = backing ? (byte)0xab : (byte)0;
        MustRead(v, $"-P 0x{fill:x2} 0 5k", "-P 0x11 5k 2k", $"-P 0x{fill:x2} 7k 1k", "-P 0 2M 8k", "-P 0x22 6142k 4k", "-P 0x33 9M 100");
    }

    [Theory]
    [InlineData("metadata", "on", "longer")]
    [InlineData("metadata", "on", "shorter")]
    [InlineData("metadata", "on", "none")]
    [InlineData("metadata", "off", "longer")]
    [InlineData("metadata", "off", "none")]
    [InlineData("falloc", "on", "longer")]
    [InlineData("falloc", "on", "none")]
    [InlineData("falloc", "off", "longer")]
    [InlineData("full", "on", "longer")]
    [InlineData("full", "off", "shorter")]
    [InlineData("off", "on", "longer")]
    [InlineData("off", "off", "longer")]
    public void GrowingWithPreallocationMatchesQemu(string mode, string extendedL2, string backing)
    {
        using var dir = new TempDir();
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", dir.File("long.qcow2"), "4M");
        Qemu.MustRun("qemu-io", "-c", "write -q -P 0xab 0 4M", dir.File("long.qcow2"));
        Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", dir.File("short.qcow2"), "512k");
        Qemu.MustRun("qemu-io", "-c", "write -q -P 0xab 0 512k", dir.File("short.qcow2"));
        string q = dir.File("q.qcow2"), v = dir.File("v.qcow2");
        foreach (var path in new[] { q, v })
        {
            var create = new List<string> { "create", "-q", "-f", "qcow2", "-o", $"extended_l2={extendedL2},cluster_size=128k" };
            if (backing != "none") create.AddRange(["-F", "qcow2", "-b", backing == "longer" ? "long.qcow2" : "short.qcow2"]);
            // 1000k: the old end lies inside a cluster (and on a subcluster boundary).
            Qemu.MustRun("qemu-img", create.Append(path).Append("1000k").ToArray());
            Qemu.MustRun("qemu-io", "-c", "write -q -P 0x11 900k 4k", path);
        }
        Qemu.MustRun("qemu-img", "resize", "-q", "--preallocation=" + mode, q, "3M");
        var r = Tools.Vdisk("resize", "-q", "--preallocation=" + mode, v, "3M");
        Assert.True(r.ExitCode == 0, r.ToString());

        // Host offsets may differ (qemu-img's falloc grow moves the old last cluster), flags and bitmaps may not.
        Assert.Equal(L2Dump.Entries(q), L2Dump.Entries(v));
        Qemu.MustRun("qemu-img", "check", v);
        Assert.Equal(0, Tools.Run("qemu-img", "compare", q, v).ExitCode);
        if (backing == "longer") MustRead(v, "-P 0xab 0 900k", "-P 0x11 900k 4k", "-P 0xab 904k 96k", "-P 0 1000k 2072k");
        else if (backing == "shorter") MustRead(v, "-P 0xab 0 512k", "-P 0 512k 388k", "-P 0x11 900k 4k", "-P 0 904k 2168k");
        else MustRead(v, "-P 0 0 900k", "-P 0x11 900k 4k", "-P 0 904k 2168k");

        // Later partial writes into the grown, preallocated area.
        string[] ops = ["write -q -P 0x22 1100k 6k", "write -q -P 0x33 2M 512"];
        Qemu.MustRun("qemu-io", ops.SelectMany(o => new[] { "-c", o }).Append(q).ToArray());
        Assert.Equal(0, Tools.Vdisk(new[] { "io" }.Concat(ops.SelectMany(o => new[] { "-c", o })).Append(v).ToArray()).ExitCode);
        Assert.Equal(L2Dump.Entries(q), L2Dump.Entries(v));
        Qemu.MustRun("qemu-img", "check", v);
        Assert.Equal(0, Tools.Run("qemu-img", "compare", q, v).ExitCode);
    }
}
