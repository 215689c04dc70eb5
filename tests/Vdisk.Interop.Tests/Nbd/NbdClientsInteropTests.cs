using System.Text.Json;
using Xunit;

namespace Vdisk.Interop.Tests.Nbd;

/// <summary>`vdisk serve` driven by real NBD clients (nbdinfo, nbdcopy, qemu-img, qemu-io, fio), with qemu-nbd and qemu-img as the oracle.</summary>
public sealed class NbdClientsInteropTests : IDisposable
{
    private readonly TempDir _dir = new();
    public void Dispose() => _dir.Dispose();

    private static string Uri(string socket, string export = "exp") => $"nbd+unix:///{export}?socket={socket}";

    private static ToolResult Ok(string program, params string[] args)
    {
        var r = Tools.RunWithTimeout(program, args, TimeSpan.FromMinutes(2));
        Assert.True(r.ExitCode == 0, $"{program} {string.Join(' ', args)}: {r}");
        return r;
    }

    /// <summary>A 64 MiB qcow2 with data, a zero cluster and untouched space, written by QEMU.</summary>
    private string QemuWrittenImage()
    {
        var img = _dir.File("src.qcow2");
        Ok("qemu-img", "create", "-q", "-f", "qcow2", img, "64M");
        Ok("qemu-io", "-f", "qcow2", "-c", "write -P 0xab 1M 192k", "-c", "write -z 4M 128k", "-c", "write -P 0x5c 40M 4k", img);
        return img;
    }

    [Fact]
    public void Nbdinfo_sees_the_same_export_as_from_qemu_nbd()
    {
        var img = QemuWrittenImage();
        string vs = _dir.File("v.sock"), qs = _dir.File("q.sock");
        using var vdisk = NbdServerProcess.Vdisk(_dir, "-f", "qcow2", "-r", "-t", "-e", "8", "-k", vs, "-x", "exp", "-D", "test disk", img);
        using var qemu = NbdServerProcess.QemuNbd(_dir, "-f", "qcow2", "-r", "-t", "--shared=8", "-k", qs, "-x", "exp", "-D", "test disk", img);
        static Dictionary<string, string> Facts(string json)
        {
            var export = JsonDocument.Parse(json).RootElement.GetProperty("exports")[0];
            return export.EnumerateObject().Where(p => p.Name != "uri").ToDictionary(p => p.Name, p => p.Value.ToString());
        }
        var mine = Facts(Ok("nbdinfo", "--json", Uri(vs)).StdOut);
        Assert.Equal(Facts(Ok("nbdinfo", "--json", Uri(qs)).StdOut), mine);
        Assert.Equal("67108864", mine["export-size"]);
        Assert.Equal("True", mine["is_read_only"]);
        Assert.Equal(Ok("nbdinfo", "--map", Uri(qs)).StdOut, Ok("nbdinfo", "--map", Uri(vs)).StdOut);
        var list = Ok("nbdinfo", "--list", $"nbd+unix:///?socket={vs}").StdOut;
        Assert.Contains("export=\"exp\"", list);
        Assert.Contains("description: test disk", list);
        Assert.Equal(0, vdisk.Stop());
    }

    [Fact]
    public void Nbdinfo_map_agrees_with_vdisk_map()
    {
        var img = QemuWrittenImage();
        string vs = _dir.File("v.sock");
        using var vdisk = NbdServerProcess.Vdisk(_dir, "-r", "-t", "-k", vs, "-x", "exp", img);
        // vdisk map's data/zero columns, merged the way nbdinfo merges equal neighbours.
        var expected = new List<(long Start, long Length, int Flags)>();
        foreach (var e in JsonDocument.Parse(Tools.Vdisk("map", "--output=json", img).StdOut).RootElement.EnumerateArray())
        {
            int flags = (e.GetProperty("data").GetBoolean() ? 0 : 1) | (e.GetProperty("zero").GetBoolean() ? 2 : 0);
            long start = e.GetProperty("start").GetInt64(), length = e.GetProperty("length").GetInt64();
            if (expected.Count > 0 && expected[^1].Flags == flags) expected[^1] = expected[^1] with { Length = expected[^1].Length + length };
            else expected.Add((start, length, flags));
        }
        var actual = Ok("nbdinfo", "--map", Uri(vs)).StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Select(f => (long.Parse(f[0]), long.Parse(f[1]), int.Parse(f[2]))).ToList();
        Assert.Equal(expected, actual);
        Assert.Contains(actual, a => a.Item3 == 0); // there is data, and
        Assert.Contains(actual, a => a.Item3 == 3); // there are holes: the comparison means something
        Assert.Equal(0, vdisk.Stop());
    }

    [Fact]
    public void Nbdcopy_out_of_and_into_the_server_round_trips()
    {
        var img = QemuWrittenImage();
        string vs = _dir.File("v.sock"), copy = _dir.File("copy.raw");
        using (var server = NbdServerProcess.Vdisk(_dir, "-r", "-t", "-e", "4", "-k", vs, "-x", "exp", img))
        {
            Ok("nbdcopy", Uri(vs), copy);
            Assert.Equal(0, server.Stop());
        }
        Ok("qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw", img, copy);

        var target = _dir.File("target.qcow2");
        Ok("qemu-img", "create", "-q", "-f", "qcow2", target, "64M");
        var random = _dir.File("random.raw");
        var bytes = new byte[64 << 20];
        new Random(5).NextBytes(bytes.AsSpan(8 << 20, 16 << 20)); // data, with zeros around it
        File.WriteAllBytes(random, bytes);
        using (var server = NbdServerProcess.Vdisk(_dir, "-f", "qcow2", "-t", "-e", "4", "-k", vs, "-x", "exp", target))
        {
            Ok("nbdcopy", random, Uri(vs));
            Assert.Equal(0, server.Stop());
        }
        Ok("qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2", random, target);
        Assert.Contains("No errors were found", Ok("qemu-img", "check", target).StdOut);
    }

    [Fact]
    public void Qemu_img_reads_and_converts_over_tcp()
    {
        var img = QemuWrittenImage();
        int port = NbdServerProcess.FreePort();
        using var server = NbdServerProcess.Vdisk(_dir, "-r", "-t", "-p", port.ToString(), "-b", "127.0.0.1", img);
        string uri = $"nbd://127.0.0.1:{port}";
        Assert.Contains("virtual size: 64 MiB (67108864 bytes)", Ok("qemu-img", "info", uri).StdOut);
        Ok("qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2", uri, img);
        var converted = _dir.File("conv.qcow2");
        Ok("qemu-img", "convert", "-f", "raw", "-O", "qcow2", uri, converted);
        Ok("qemu-img", "compare", "-q", converted, img);
        Assert.Equal(0, server.Stop());
    }

    [Fact]
    public void Qemu_io_patterns_zeroes_and_discards_land_in_a_consistent_image()
    {
        var img = _dir.File("w.qcow2");
        Ok("qemu-img", "create", "-q", "-f", "qcow2", img, "64M");
        string vs = _dir.File("v.sock");
        using (var server = NbdServerProcess.Vdisk(_dir, "-f", "qcow2", "-t", "--discard=unmap", "-k", vs, "-x", "exp", img))
        {
            var r = Ok("qemu-io", "-f", "raw", "-c", "write -P 0x22 2M 256k", "-c", "write -P 0x33 8M 1M", "-c", "write -z 8M 64k",
                "-c", "write -z -u 8256k 128k", "-c", "discard 2M 64k", "-c", "aio_write -P 0x44 20M 64k", "-c", "aio_flush",
                "-c", "read -P 0x33 8384k 832k", "-c", "read -P 0 8M 192k", "-c", "flush", Uri(vs));
            Assert.DoesNotContain("failed", r.StdOut + r.StdErr);
            Assert.Equal(0, server.Stop());
        }
        Assert.Contains("No errors were found", Ok("qemu-img", "check", img).StdOut);
        var back = Ok("qemu-io", "-f", "qcow2", "-c", "read -P 0x22 2112k 192k", "-c", "read -P 0 8M 192k", "-c", "read -P 0x33 8384k 832k",
            "-c", "read -P 0x44 20M 64k", img);
        Assert.DoesNotContain("failed", back.StdOut + back.StdErr);
        // With --discard=unmap the discard reached the image: the cluster at 2M became a zero cluster, as QEMU's own discard makes it.
        Assert.Contains("\"start\": 2097152, \"length\": 65536, \"depth\": 0, \"present\": true, \"zero\": true, \"data\": false}",
            Ok("qemu-img", "map", "--output=json", img).StdOut);
    }

    [Fact]
    public void Fio_with_verify_finds_no_errors()
    {
        var img = _dir.File("fio.qcow2");
        Ok("qemu-img", "create", "-q", "-f", "qcow2", img, "64M");
        string vs = _dir.File("v.sock");
        using var server = NbdServerProcess.Vdisk(_dir, "-f", "qcow2", "-t", "-e", "8", "-k", vs, "-x", "exp", img);
        // Jobs must not overlap, or verification reports false errors (reliability.md 3.3).
        var r = Ok("fio", "--name=v", "--ioengine=nbd", $"--uri={Uri(vs)}", "--rw=randwrite", "--bs=4k", "--iodepth=32",
            "--numjobs=4", "--offset_increment=8M", "--size=8M", "--verify=crc32c", "--verify_fatal=1", "--group_reporting");
        Assert.Contains("err= 0", r.StdOut);
        Assert.Equal(0, server.Stop());
        Assert.Contains("No errors were found", Ok("qemu-img", "check", img).StdOut);
    }
}
