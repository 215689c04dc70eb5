using Vdisk.Images;
using Xunit;

namespace Vdisk.Interop.Tests.Qcow2;

/// <summary>
/// The same seeded operations applied by Vdisk to a Vdisk-created image and by qemu-io to a qemu-img-created
/// image with the same options: qemu-img compare must find them identical and qemu-img check both clean.
/// </summary>
public class QemuIoParityTests
{
    public static IEnumerable<object[]> Variants() => new[]
    {
        new object[] { "cluster_size=65536", false },
        new object[] { "cluster_size=4096", false },
        new object[] { "cluster_size=4096", true },
        new object[] { "cluster_size=512,refcount_bits=64", false },
        new object[] { "cluster_size=4096,refcount_bits=1", false },
        new object[] { "cluster_size=4096,refcount_bits=4", true },
        new object[] { "cluster_size=16384,refcount_bits=8", false },
        new object[] { "cluster_size=65536,refcount_bits=32", true },
        new object[] { "cluster_size=2M", false },
        new object[] { "compat=0.10", false },
        new object[] { "compat=0.10,cluster_size=4096", true },
        new object[] { "compat=0.10,cluster_size=512", false },
        new object[] { "extended_l2=on,cluster_size=16384", false },
        new object[] { "extended_l2=on,cluster_size=65536", true },
        new object[] { "extended_l2=off,cluster_size=65536", true },
        new object[] { "lazy_refcounts=on,cluster_size=4096", false },
    };

    [Theory]
    [MemberData(nameof(Variants))]
    public async Task SameOperationsGiveIdenticalCleanImages(string options, bool withBacking)
    {
        using var dir = new TempDir();
        int seed = Qemu.StableSeed(options + withBacking);
        var opts = options.Split(',').Select(p => p.Split('=')).ToDictionary(p => p[0], p => p[1]);
        int clusterSize = opts.TryGetValue("cluster_size", out var cs) ? (int)Qemu.ParseSize(cs) : 65536;
        long size = clusterSize >= 1 << 20 ? 16L << 20 : 8L << 20;
        var qemuArgs = new List<string> { "create", "-q", "-f", "qcow2", "-o", options };
        if (withBacking)
        {
            var basePath = dir.File("base.qcow2");
            Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", basePath, size.ToString());
            Qemu.Io(basePath, "qcow2", Qemu.RandomCommands(seed + 1, size, 65536, 40));
            opts["backing_file"] = "base.qcow2";
            opts["backing_fmt"] = "qcow2";
            qemuArgs.AddRange(["-b", "base.qcow2", "-F", "qcow2"]);
        }
        var qemuPath = dir.File("qemu.qcow2");
        var vdiskPath = dir.File("vdisk.qcow2");
        qemuArgs.AddRange([qemuPath, size.ToString()]);
        Qemu.MustRun("qemu-img", qemuArgs.ToArray());
        DiskImages.Create(vdiskPath, "qcow2", new ImageCreateOptions { Size = size, Options = opts });

        var ops = Qemu.RandomOps(seed, size, clusterSize, 300, flushes: true);
        Qemu.Io(qemuPath, "qcow2", ops.Select(o => o.ToQemuIo()));
        await using (var image = DiskImages.Open(vdiskPath))
        {
            for (int i = 0; i < ops.Count; i++) await ops[i].ApplyAsync(image, async: i % 2 == 1);
        }

        var cmp = Tools.Run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", qemuPath, vdiskPath);
        Assert.True(cmp.ExitCode == 0, $"images differ after the same operations\n{cmp}");
        foreach (var p in new[] { qemuPath, vdiskPath })
        {
            var check = Tools.Run("qemu-img", "check", p);
            Assert.True(check.ExitCode == 0 && check.StdOut.Contains("No errors were found"), $"{Path.GetFileName(p)}: {check}");
        }
    }

    public static IEnumerable<object[]> CliVariants() => new[]
    {
        new object[] { "cluster_size=65536", false },
        new object[] { "cluster_size=4096,refcount_bits=1", true },
        new object[] { "compat=0.10,cluster_size=4096", true },
        new object[] { "extended_l2=on,cluster_size=32768", true },
        new object[] { "lazy_refcounts=on,cluster_size=512", false },
    };

    /// <summary>The same check through the command line: `vdisk create` and `vdisk io` against qemu-img and qemu-io.</summary>
    [Theory]
    [MemberData(nameof(CliVariants))]
    public void SameQemuIoCommandsThroughVdiskIoGiveIdenticalCleanImages(string options, bool withBacking)
    {
        using var dir = new TempDir();
        int seed = Qemu.StableSeed("cli" + options + withBacking);
        int clusterSize = (int)Qemu.ParseSize(options.Split(',').Select(p => p.Split('=')).FirstOrDefault(p => p[0] == "cluster_size")?[1] ?? "65536");
        const long size = 8L << 20;
        var backingArgs = new List<string>();
        if (withBacking)
        {
            var basePath = dir.File("base.qcow2");
            Qemu.MustRun("qemu-img", "create", "-q", "-f", "qcow2", basePath, size.ToString());
            Qemu.Io(basePath, "qcow2", Qemu.RandomCommands(seed + 1, size, 65536, 40));
            backingArgs.AddRange(["-b", "base.qcow2", "-F", "qcow2"]);
        }
        var qemuPath = dir.File("qemu.qcow2");
        var vdiskPath = dir.File("vdisk.qcow2");
        Qemu.MustRun("qemu-img", ["create", "-q", "-f", "qcow2", "-o", options, .. backingArgs, qemuPath, size.ToString()]);
        var created = Tools.Vdisk(["create", "-q", "-f", "qcow2", "-o", options, .. backingArgs, vdiskPath, size.ToString()]);
        Assert.True(created.ExitCode == 0, created.ToString());

        var commands = Qemu.RandomOps(seed, size, clusterSize, 200, flushes: true).Select(o => o.ToQemuIo()).ToList();
        Qemu.Io(qemuPath, "qcow2", commands);
        var io = Tools.Vdisk(["io", "-f", "qcow2", .. commands.SelectMany(c => new[] { "-c", c }), vdiskPath]);
        Assert.True(io.ExitCode == 0, io.ToString());

        var cmp = Tools.Run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", qemuPath, vdiskPath);
        Assert.True(cmp.ExitCode == 0, $"images differ after the same commands\n{cmp}");
        var check = Tools.Run("qemu-img", "check", vdiskPath);
        Assert.True(check.ExitCode == 0, check.ToString());
    }
}
