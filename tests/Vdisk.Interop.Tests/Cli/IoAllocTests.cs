using Vdisk.Interop.Tests.Qcow2;
using Xunit;

namespace Vdisk.Interop.Tests.Cli;

/// <summary>
/// qemu-io's alloc (qemu-iotests 154 uses it): qemu-io and vdisk io run the same alloc commands on the same image
/// and must print the same lines with the same exit status.
/// </summary>
public class IoAllocTests
{
    private const long Size = (128L << 20) + 2048;

    private static readonly string[] Commands =
    {
        "alloc 0", "alloc 0 64k", "a 4k 4k", "alloc 8k 4k", "alloc 12k 20k", "alloc 64k 64k", "alloc 1k 5k",
        "alloc 1.5k 1k", "alloc 0x2000 0x1000", "alloc 100 200", "alloc 1M 1M",
        "alloc 128M 2048", "alloc 128M 4k", "alloc 127M 2M", "alloc 0 1T", "alloc 1G 1k", "alloc 1k 0",
        "alloc", "alloc 1 2 3", "alloc -q 0 4k", "alloc -q 0", "alloc x", "alloc 0 y", "alloc -1", "help alloc",
    };

    [Theory]
    // The last 2 KiB of the disk lie in one cluster (or subcluster), which zeros of its first 512 bytes make a zero one...
    [InlineData("cluster_size=4k", true, 2048)]
    [InlineData("cluster_size=64k,extended_l2=on,preallocation=metadata", true, 2048)] // unallocated subclusters with a host offset
    // ... or in four clusters, of which only the first is written.
    [InlineData("cluster_size=512", false, 512)]
    public void AllocPrintsWhatQemuIoPrints(string options, bool backing, int tailAllocated)
    {
        using var dir = new TempDir();
        var create = new List<string> { "create", "-q", "-f", "qcow2", "-o", options };
        if (backing)
        {
            Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", dir.File("base.qcow2"), "1M");
            Qemu.MustRun("qemu-io", "-c", "write -q -P 1 4k 8k", "-c", "write -q -z 64k 4k", dir.File("base.qcow2"));
            create.AddRange(["-F", "qcow2", "-b", "base.qcow2"]);
        }
        string image = dir.File("top.qcow2");
        Qemu.MustRun("qemu-img", create.Append(image).Append(Size.ToString()).ToArray());
        // Data, a zero cluster, zeros of part of a cluster, a discard, and the partial last cluster made a zero one.
        Qemu.MustRun("qemu-io", "-c", "write -q -P 2 0 6k", "-c", "write -q -z 16k 16k", "-c", "write -q -z 33k 1k",
            "-c", "discard -q 20k 4k", "-c", "write -q -z 128M 512", image);

        var io = Commands.SelectMany(c => new[] { "-c", c }).ToArray();
        var theirs = Tools.Run("qemu-io", new[] { "-r" }.Concat(io).Append(image).ToArray());
        var ours = Tools.Vdisk(new[] { "io", "-r" }.Concat(io).Append(image).ToArray());
        Assert.True(theirs.ExitCode == ours.ExitCode, $"exit codes differ\nqemu-io: {theirs}\nvdisk: {ours}");
        Assert.Equal(CliInteropTests.Normalize(theirs.StdOut), CliInteropTests.Normalize(ours.StdOut));
        Assert.Equal(CliInteropTests.Normalize(theirs.StdErr), CliInteropTests.Normalize(ours.StdErr));
        // What the comparison rests on: a zero cluster counts as allocated, and a range that runs past the end of the
        // disk is cut there.
        Assert.Contains($"{tailAllocated}/2048 bytes allocated at offset 128 MiB", ours.StdOut);
        Assert.Contains("/1050624 bytes allocated at offset 127 MiB", ours.StdOut);
    }
}
