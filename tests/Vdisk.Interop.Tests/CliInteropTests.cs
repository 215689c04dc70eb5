using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit;

namespace Vdisk.Interop.Tests;

/// <summary>vdisk against qemu-img and qemu-io on raw images: same output text, same exit status, same files.</summary>
public sealed class CliInteropTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vdisk-cli-interop-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string P(string name) => Path.Combine(_dir, name);

    /// <summary>Makes qemu's output comparable: its program name becomes vdisk's, timings are blanked.</summary>
    internal static string Normalize(string text)
    {
        text = text.Replace("qemu-img:", "vdisk:").Replace("qemu-io:", "vdisk:").Replace("Try 'qemu-img --help'", "Try 'vdisk --help'");
        text = Regex.Replace(text, @"ops; .* ops/sec\)", "ops; TIME");
        return Regex.Replace(text, @"Run completed in \d+\.\d{3} seconds", "Run completed in TIME seconds");
    }

    private static void AssertSame(ToolResult qemu, ToolResult vdisk)
    {
        Assert.True(qemu.ExitCode == vdisk.ExitCode, $"exit codes differ\nqemu: {qemu}\nvdisk: {vdisk}");
        Assert.Equal(Normalize(qemu.StdOut), Normalize(vdisk.StdOut));
        Assert.Equal(Normalize(qemu.StdErr), Normalize(vdisk.StdErr));
    }

    [Theory]
    [InlineData("4M")]
    [InlineData("1.5M")]
    [InlineData("0")]
    public void CreateRawMatchesQemuImg(string size)
    {
        var q = Tools.Run("qemu-img", "create", "-f", "raw", P("q.raw"), size);
        var v = Tools.Vdisk("create", "-f", "raw", P("v.raw"), size);
        Assert.Equal(0, v.ExitCode);
        Assert.Equal(q.StdOut.Replace(P("q.raw"), P("v.raw")), v.StdOut);
        Assert.Equal(new FileInfo(P("q.raw")).Length, new FileInfo(P("v.raw")).Length);
        Assert.Equal(File.ReadAllBytes(P("q.raw")), File.ReadAllBytes(P("v.raw")));
    }

    [Theory]
    [InlineData("preallocation=falloc")]
    [InlineData("preallocation=full")]
    [InlineData("preallocation=off,size=64k")]
    public void CreateWithOptionsMatchesQemuImg(string options)
    {
        var extra = options.Contains("size=") ? Array.Empty<string>() : new[] { "1M" };
        var q = Tools.Run("qemu-img", new[] { "create", "-f", "raw", "-o", options, P("q.raw") }.Concat(extra).ToArray());
        var v = Tools.Vdisk(new[] { "create", "-f", "raw", "-o", options, P("v.raw") }.Concat(extra).ToArray());
        AssertSame(q with { StdOut = q.StdOut.Replace(P("q.raw"), P("v.raw")) }, v);
        Assert.Equal(new FileInfo(P("q.raw")).Length, new FileInfo(P("v.raw")).Length);
    }

    [Theory]
    [InlineData("create -f raw {0}")]
    [InlineData("create -f raw {0} 1x")]
    [InlineData("create -f raw {0} 8E")]
    [InlineData("create -f raw -o foo=bar {0} 1M")]
    [InlineData("create -f raw {0} 1k -o size=2k")]
    [InlineData("create -f raw -o  {0} 1M")]
    [InlineData("create -f nosuchformat {0} 1M")]
    [InlineData("create -x {0} 1M")]
    [InlineData("create -f")]
    [InlineData("info --output=xml {0}")]
    [InlineData("info")]
    [InlineData("map --start-offset=1k5 {0}")]
    [InlineData("nosuchcommand")]
    public void UsageErrorsMatchQemuImg(string command)
    {
        var args = string.Format(command, P("e.raw")).Split(' ');
        AssertSame(Tools.Run("qemu-img", args), Tools.Vdisk(args));
        Assert.False(File.Exists(P("e.raw")));
    }

    [Fact]
    public void DriverRejectionPrintsFormattingThenFailsWithoutLeavingAFile()
    {
        // The wording of the driver's own message is the format driver's; the shape and status are the CLI's.
        var args = new[] { "create", "-f", "raw", "-o", "preallocation=bogus", P("e.raw"), "1M" };
        var q = Tools.Run("qemu-img", args);
        var v = Tools.Vdisk(args);
        Assert.Equal((1, q.StdOut), (v.ExitCode, v.StdOut));
        Assert.StartsWith($"vdisk: {P("e.raw")}: ", v.StdErr);
        Assert.False(File.Exists(P("e.raw")));
    }

    /// <summary>A sparse raw image written by qemu-io: data at 1M, 2M and 9M, holes elsewhere.</summary>
    private string SparseImage()
    {
        var file = P("s.raw");
        Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "raw", file, "10M").ExitCode);
        Assert.Equal(0, Tools.Run("qemu-io", "-f", "raw", "-c", "write -P 1 1M 64k", "-c", "write -P 2 2M 4k",
            "-c", "write -P 3 9M 1M", file).ExitCode);
        return file;
    }

    [Fact]
    public void InfoJsonMatchesQemuImg()
    {
        var file = SparseImage();
        var q = JsonNode.Parse(Tools.Run("qemu-img", "info", "-f", "raw", "--output=json", file).StdOut)!.AsObject();
        var vResult = Tools.Vdisk("info", "-f", "raw", "--output=json", file);
        Assert.Equal(0, vResult.ExitCode);
        var v = JsonNode.Parse(vResult.StdOut)!.AsObject();
        Assert.Equal(q.Select(p => p.Key), v.Select(p => p.Key));
        foreach (var (key, value) in q)
        {
            if (key == "actual-size")
                Assert.InRange(v[key]!.GetValue<long>(), value!.GetValue<long>() - 8192, value.GetValue<long>() + 8192);
            else
                Assert.Equal(value!.ToJsonString(), v[key]!.ToJsonString());
        }
    }

    [Fact]
    public void InfoTextMatchesQemuImgExactly()
    {
        var file = SparseImage();
        // Both read st_blocks, so even the disk size agrees; the JSON text too, byte for byte.
        AssertSame(Tools.Run("qemu-img", "info", "-f", "raw", file), Tools.Vdisk("info", "-f", "raw", file));
        AssertSame(Tools.Run("qemu-img", "info", "-f", "raw", "--output=json", "--backing-chain", file),
            Tools.Vdisk("info", "-f", "raw", "--output=json", "--backing-chain", file));
    }

    [Theory]
    [InlineData("--output=json")]
    [InlineData("--output=human")]
    [InlineData("--output=json --start-offset=1000 --max-length=2M")]
    [InlineData("--start-offset=512 --max-length=1M")]
    [InlineData("--output=json --start-offset=20M")]
    [InlineData("--output=json --max-length=0")]
    public void MapMatchesQemuImg(string options)
    {
        var file = SparseImage();
        var args = new[] { "map", "-f", "raw" }.Concat(options.Split(' ')).Append(file).ToArray();
        var q = Tools.Run("qemu-img", args);
        Assert.Equal(0, q.ExitCode);
        AssertSame(q, Tools.Vdisk(args));
    }

    private static readonly string[] IoScript =
    {
        "write -P 0x55 0 4k", "read -P 0x55 0 4k", "read -P 0x56 0 4k", "read -v 0 32", "read -q 0 512",
        "write -z 8k 4k", "write -z -u 8k 4k", "discard 8k 4k", "flush", "write 1 1", "write 100k 1k",
        "read 4M 1", "read 4194303 2", "read -5 1", "read 0 x", "read 0", "bogus", "write -P abc 0 1",
        "write -z -P 1 0 1", "write -u 0 1", "read 0 3G", "read 1.5k 1", "read 0x10 0x10", "discard 4M 1",
        "write 4M 0", "flush 1", "write 0 1 2", "read 0 99E", "read -P 0x55 -s 1 -l 2 0 4", "read -v 1 20", "length",
        "read -P 0xcd 100k 1k",
    };

    [Fact]
    public void IoScriptMatchesQemuIo()
    {
        Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "raw", P("q.raw"), "4M").ExitCode);
        File.Copy(P("q.raw"), P("v.raw"));
        var cmds = IoScript.SelectMany(c => new[] { "-c", c }).ToArray();
        var q = Tools.Run("qemu-io", new[] { "-f", "raw" }.Concat(cmds).Append(P("q.raw")).ToArray());
        var v = Tools.Vdisk(new[] { "io", "-f", "raw" }.Concat(cmds).Append(P("v.raw")).ToArray());
        Assert.Equal(1, v.ExitCode);
        AssertSame(q, v);
        Assert.Equal(File.ReadAllBytes(P("q.raw")), File.ReadAllBytes(P("v.raw")));
    }

    [Theory]
    [InlineData("write -P 1 0 4k")]
    [InlineData("read -P 0 0 64k")]
    [InlineData("read -P 1 0 64k")]
    [InlineData("read 1M 1")]
    public void IoExitStatusMatchesQemuIo(string command)
    {
        Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "raw", P("q.raw"), "1M").ExitCode);
        File.Copy(P("q.raw"), P("v.raw"));
        AssertSame(Tools.Run("qemu-io", "-f", "raw", "-c", command, P("q.raw")), Tools.Vdisk("io", "-f", "raw", "-c", command, P("v.raw")));
    }

    [Theory]
    [InlineData("-r|-c|write 0 1|IMG")]
    [InlineData("-c|read 0 1|IMG")]
    [InlineData("-t|bogus|-c|read 0 1|IMG")]
    [InlineData("-f|raw|-c|read 0 1|MISSING")]
    [InlineData("-f|raw|-c|write 0 1|-c|abort|-c|read 0 1|IMG")]
    [InlineData("-f|raw|-c|read 0 1|IMG|IMG")]
    public void IoOpenAndAbortBehaviourMatchesQemuIo(string template)
    {
        Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "raw", P("q.raw"), "1M").ExitCode);
        File.Copy(P("q.raw"), P("v.raw"));
        string[] Args(string image) => template.Split('|').Select(a => a == "IMG" ? image : a == "MISSING" ? P("missing.raw") : a).ToArray();
        var q = Tools.Run("qemu-io", Args(P("q.raw")));
        var v = Tools.Vdisk(new[] { "io" }.Concat(Args(P("v.raw"))).ToArray());
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Equal(Normalize(q.StdErr.Replace(P("q.raw"), P("v.raw"))), Normalize(v.StdErr));
        // Usage text is vdisk's own; everything else qemu-io prints must match.
        if (!q.StdOut.StartsWith("Usage:", StringComparison.Ordinal)) Assert.Equal(Normalize(q.StdOut), Normalize(v.StdOut));
        else Assert.StartsWith("Usage: vdisk io", v.StdOut);
    }

    [Theory]
    [InlineData("-c 1000")]
    [InlineData("-c 1000 -w -d 4 -S 8k --pattern=5 --flush-interval=10")]
    [InlineData("-c 100 -w -d 4 --flush-interval=10 --no-drain -t none")]
    [InlineData("-c 1000 -w -o 4194000 -s 1 -S 100")]
    [InlineData("-c 5 -o 5M")]
    [InlineData("-c 10 -s 8M")]
    [InlineData("-c 10 --flush-interval=5")]
    public void BenchMatchesQemuImg(string options)
    {
        Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "raw", P("q.raw"), "4M").ExitCode);
        File.Copy(P("q.raw"), P("v.raw"));
        var opts = options.Split(' ');
        var q = Tools.Run("qemu-img", new[] { "bench", "-f", "raw" }.Concat(opts).Append(P("q.raw")).ToArray());
        var v = Tools.Vdisk(new[] { "bench", "-f", "raw" }.Concat(opts).Append(P("v.raw")).ToArray());
        AssertSame(q, v);
        if (q.ExitCode == 0) Assert.Contains("Run completed in ", v.StdOut);
        Assert.Equal(File.ReadAllBytes(P("q.raw")), File.ReadAllBytes(P("v.raw")));
    }
}
