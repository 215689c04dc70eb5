using Xunit;

namespace Vdisk.Interop.Tests.Qcow2;

/// <summary>
/// qemu-iotests 154: write-zeroes of part of a (sub)cluster makes the whole (sub)cluster a zero one when the rest of it
/// already reads as zeros (past the end of the disk counts) and it holds no data; otherwise zeros are written.
/// The same qemu-io commands run through qemu-io and vdisk io must leave the same L2 entries and map.
/// </summary>
public class PartialZeroWriteTests
{
    private const long Size = 128L << 20;

    [Theory]
    // The partial last cluster of a disk that ends 2 KiB into a 4 KiB cluster: front, back, middle, whole.
    [InlineData("cluster_size=4k", Size + 2048, false, "write -z 134217728 512")]
    [InlineData("cluster_size=4k", Size + 2048, false, "write -z 134219264 512")]
    [InlineData("cluster_size=4k", Size + 2048, false, "write -z 134218240 1024")]
    [InlineData("cluster_size=4k", Size + 2048, false, "write -z 134217728 2048")]
    // ... and with data already in it: zeros must be written.
    [InlineData("cluster_size=4k", Size + 1024, false, "write -P 1 134217728 1024", "write -z 134218240 512")]
    // Over a backing file: unaligned heads and tails where the backing file reads zeros, and where it has data.
    [InlineData("cluster_size=4k", Size, true, "write -z 0 2k", "write -z 10k 2k", "write -z 17k 2k", "write -z 27k 2k")]
    [InlineData("cluster_size=4k", Size, true, "write -z 66k 7k", "write -z 3k 2k")]
    // Subclusters: a partial subcluster is judged on its own.
    [InlineData("cluster_size=64k,extended_l2=on", Size + 1024, true, "write -z 1k 1k", "write -z 6k 3k", "write -z 134217728 512")]
    // A v3 cluster without a backing file: the rest reads as zeros.
    [InlineData("cluster_size=128k", Size, false, "write -z 1M 64k", "write -P 2 3M 4k", "write -z 3M 8k")]
    // With unmap allowed; part of a cluster that is a zero one already; preallocated clusters hold data (of zeros).
    [InlineData("cluster_size=4k", Size + 2048, false, "write -z -u 134218240 512")]
    [InlineData("cluster_size=4k", Size, true, "write -z 8k 4k", "write -z 9k 1k", "write -z -u 12k 4k", "write -z -u 13k 1k")]
    [InlineData("cluster_size=4k,preallocation=metadata", Size, false, "write -z 1k 1k", "write -z -u 9k 2k")]
    public void MatchesQemu(string options, long size, bool backing, params string[] commands)
    {
        using var dir = new TempDir();
        if (backing)
        {
            Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", dir.File("base.qcow2"), size.ToString());
            Qemu.MustRun("qemu-io", "-c", "write -q -P 0x11 5k 1k", "-c", "write -q -P 0x11 65k 10k", dir.File("base.qcow2"));
        }
        string q = dir.File("q.qcow2"), v = dir.File("v.qcow2");
        foreach (var path in new[] { q, v })
        {
            var create = new List<string> { "create", "-q", "-f", "qcow2", "-o", options };
            if (backing) create.AddRange(["-F", "qcow2", "-b", "base.qcow2"]);
            Qemu.MustRun("qemu-img", create.Append(path).Append(size.ToString()).ToArray());
        }
        var io = commands.SelectMany(c => new[] { "-c", c }).ToArray();
        Qemu.MustRun("qemu-io", io.Append(q).ToArray());
        var ours = Tools.Vdisk(io.Prepend("io").Append(v).ToArray());
        Assert.True(ours.ExitCode == 0, ours.ToString());

        Assert.Equal(L2Dump.Entries(q), L2Dump.Entries(v));
        Assert.Equal(Qemu.Describe(Qemu.Map(q)), Qemu.Describe(Qemu.Map(v)));
        Qemu.MustRun("qemu-img", "check", v);
        Assert.Equal(0, Tools.Run("qemu-img", "compare", q, v).ExitCode);
    }
}
