using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using System.Text.Json;
using Xunit;

namespace Vdisk.Interop.Tests.Probing;

/// <summary>
/// Every format qemu-img 7.2 probes is recognised by vdisk: for each, an image that qemu-img makes (or one written here
/// byte by byte where qemu-img cannot create the format) is probed by both tools as the same format, and vdisk refuses
/// it by name instead of reading it as raw; `-f raw` still opens it as raw.
/// </summary>
public class ForeignFormatTests
{
    public static TheoryData<string, string> Images() => new()
    {
        // name the test gives it, qemu's format name
        { "sparse.vmdk", "vmdk" }, { "flat.vmdk", "vmdk" }, { "stream.vmdk", "vmdk" }, { "d.vdi", "vdi" }, { "d.vhd", "vpc" },
        { "d.vhdx", "vhdx" }, { "d.qcow", "qcow" }, { "d.qed", "qed" }, { "d.luks", "luks" }, { "d.hds", "parallels" },
        { "d.bochs", "bochs" }, { "d.cloop", "cloop" }, { "d.dmg", "dmg" },
    };

    [Theory, MemberData(nameof(Images))]
    public void ProbedAsQemuProbesItAndRefusedByName(string name, string format)
    {
        using var dir = new TempDir();
        var path = dir.File(name);
        Make(path, name, format);

        Assert.Equal(format, QemuProbe(path));
        var info = Tools.Vdisk("info", path);
        Assert.Equal(1, info.ExitCode);
        Assert.StartsWith($"vdisk: Could not open '{path}': Unknown file format '{format}' (", info.StdErr);
        var target = dir.File("out.qcow2");
        var convert = Tools.Vdisk("convert", "-O", "qcow2", path, target);
        Assert.Equal(1, convert.ExitCode);
        Assert.Contains($"Unknown file format '{format}'", convert.StdErr);
        Assert.False(File.Exists(target), "nothing may be written from a source vdisk cannot read");
        Assert.Equal(1, Tools.Vdisk("io", "-c", "read 0 512", path).ExitCode);

        var raw = Tools.Vdisk("info", "--output=json", "-f", "raw", path);
        Assert.True(raw.ExitCode == 0, raw.ToString());
        Assert.Equal("raw", JsonDocument.Parse(raw.StdOut).RootElement.GetProperty("format").GetString());
    }

    /// <summary>Files cut short or with their sign past the 512 bytes QEMU looks at: probed as QEMU probes them.</summary>
    public static TheoryData<string, string, string, string> EdgeFiles() => new()
    {
        // name, content (hex for binary, else text), the format, what QEMU's driver says when it opens the file
        { "long-descriptor", "#" + new string('x', 600) + "\nversion=1\n", "raw", "" },
        { "one-hash", "#", "raw", "" },
        { "shebang", "#!/bin/sh\n", "raw", "" },
        { "short-vdi", "hex:" + new string('0', 0x80) + "7f10dabe" + new string('0', 56), "vdi", "unsupported VDI image" },
        { "short-qed", "hex:51454400", "qed", "QED cluster size is invalid" },
        { "short-parallels", "hex:" + Convert.ToHexString(Encoding.ASCII.GetBytes("WithoutFreeSpace")) + "02000000" + new string('0', 40), "parallels", "Zero sectors per track" },
    };

    [Theory, MemberData(nameof(EdgeFiles))]
    public void ShortAndLongSignaturesAreProbedAsQemuProbesThem(string name, string content, string format, string qemuDriverSays)
    {
        using var dir = new TempDir();
        var path = dir.File(name);
        File.WriteAllBytes(path, content.StartsWith("hex:", StringComparison.Ordinal)
            ? Convert.FromHexString(content[4..]) : Encoding.ASCII.GetBytes(content));
        var qemu = Tools.Run("qemu-img", "info", path);
        var vdisk = Tools.Vdisk("info", path);
        if (format == "raw")
        {
            Assert.Contains("file format: raw", qemu.StdOut);
            Assert.True(vdisk.ExitCode == 0 && vdisk.StdOut.Contains("file format: raw"), vdisk.ToString());
        }
        else
        {
            Assert.Contains(qemuDriverSays, qemu.StdErr); // QEMU took it for that format and its driver refused it
            Assert.Equal(1, vdisk.ExitCode);
            Assert.Contains($"Unknown file format '{format}'", vdisk.StdErr);
        }
    }

    /// <summary>The format qemu-img chose: from info, or, where the driver refuses the sample, from the driver's own complaint.</summary>
    private static string QemuProbe(string path)
    {
        var r = Tools.Run("qemu-img", "info", "--output=json", path);
        if (r.ExitCode == 0) return JsonDocument.Parse(r.StdOut).RootElement.GetProperty("format").GetString()!;
        if (r.StdErr.Contains("Could not locate UDIF trailer in dmg file")) return "dmg";
        throw new InvalidOperationException("qemu-img could not open the sample: " + r);
    }

    private static void Make(string path, string name, string format)
    {
        switch (name)
        {
            case "flat.vmdk": Create("vmdk", path, "subformat=monolithicFlat"); break; // a text descriptor and a -flat extent
            case "stream.vmdk": Create("vmdk", path, "subformat=streamOptimized"); break;
            case "d.luks":
                // qemu-img times PBKDF rounds in thread CPU time before it writes the header, and gives up with
                // "Unable to get accurate CPU usage" when a round measures 0 ms (a coarse clock): try again then.
                ToolResult r;
                int attempts = 0;
                do r = Tools.Run("qemu-img", "create", "-q", "--object", "secret,id=s0,data=vdisk", "-f", "luks", "-o", "key-secret=s0,iter-time=100", path, "1M");
                while (r.ExitCode != 0 && r.StdErr.Contains("Unable to get accurate CPU usage") && ++attempts < 20);
                Assert.True(r.ExitCode == 0, r.ToString());
                break;
            case "d.bochs": File.WriteAllBytes(path, Bochs()); break;
            case "d.cloop": File.WriteAllBytes(path, Cloop()); break;
            case "d.dmg": File.WriteAllBytes(path, new byte[1 << 20]); break; // QEMU probes dmg by its name alone
            default: Create(format, path, null); break;
        }
    }

    private static void Create(string format, string path, string? options)
    {
        var args = new List<string> { "create", "-q", "-f", format };
        if (options is not null) args.AddRange(["-o", options]);
        args.AddRange([path, "1M"]);
        var r = Tools.Run("qemu-img", args.ToArray());
        Assert.True(r.ExitCode == 0, r.ToString());
    }

    /// <summary>A growing Bochs redolog of 4 KiB, one extent, unallocated: a 512-byte header and a one-entry catalog.</summary>
    private static byte[] Bochs()
    {
        var b = new byte[1024];
        Encoding.ASCII.GetBytes("Bochs Virtual HD Image").CopyTo(b, 0);
        Encoding.ASCII.GetBytes("Redolog").CopyTo(b, 32);
        Encoding.ASCII.GetBytes("Growing").CopyTo(b, 48);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(64), 0x00020000); // version
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(68), 512);        // header size
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(72), 1);          // catalog entries
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(76), 1);          // bitmap size
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(80), 4096);       // extent size
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(88), 4096);       // disk size
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(512), 0xffffffff); // the extent is not allocated
        return b;
    }

    /// <summary>A cloop 2.0 file: the shell header, block size and count, two offsets, one zlib-compressed block of zeros.</summary>
    private static byte[] Cloop()
    {
        var script = Encoding.ASCII.GetBytes("#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n");
        var compressed = new MemoryStream();
        using (var z = new ZLibStream(compressed, CompressionLevel.Optimal, leaveOpen: true)) z.Write(new byte[512]);
        var b = new byte[152 + compressed.Length];
        script.CopyTo(b, 0);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(128), 512); // block size
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(132), 1);   // blocks
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(136), 152);
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(144), (ulong)b.Length);
        compressed.ToArray().CopyTo(b, 152);
        return b;
    }
}
