using Xunit;

namespace Vdisk.Interop.Tests.Cli;

/// <summary>
/// A create that qemu-img refuses is refused with qemu-img's words, and before the file it names is touched: qemu-img
/// itself deletes an existing image over a bad qcow2 option and empties it over raw's metadata preallocation.
/// </summary>
public class CreateSafetyTests
{
    public static TheoryData<string[]> Refusals() => new()
    {
        new[] { "-f", "qcow2", "-b", "IMAGE", "-F", "qcow2", "IMAGE" },     // its own backing file
        new[] { "-f", "raw", "-o", "preallocation=wat", "IMAGE", "1M" },     // a word that is no mode
        new[] { "-f", "raw", "-o", "preallocation=metadata", "IMAGE", "1M" },
        new[] { "-f", "qcow2", "-o", "preallocation=wat", "IMAGE", "1M" },
        new[] { "-f", "qcow2", "-o", "cluster_size=3000", "IMAGE", "1M" },
    };

    [Theory, MemberData(nameof(Refusals))]
    public void TheExistingImageIsKeptAndTheMessageIsQemuImgs(string[] args)
    {
        using var dir = new TempDir();
        var results = new List<ToolResult>();
        foreach (var tool in new[] { "qemu-img", "vdisk" })
        {
            var image = dir.File(tool + ".img");
            Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "qcow2", image, "1M").ExitCode);
            Assert.Equal(0, Tools.Run("qemu-io", "-c", "write -P 0x61 0 64k", image).ExitCode);
            var before = File.ReadAllBytes(image);
            var command = new[] { "create" }.Concat(args.Select(a => a == "IMAGE" ? image : a)).ToArray();
            var r = tool == "vdisk" ? Tools.Vdisk(command) : Tools.Run("qemu-img", command);
            Assert.Equal(1, r.ExitCode);
            if (tool == "vdisk") Assert.Equal(before, File.ReadAllBytes(image));
            results.Add(r with { StdOut = r.StdOut.Replace(image, "IMAGE"), StdErr = r.StdErr.Replace(image, "IMAGE") });
        }
        Assert.Equal(results[0].StdOut, results[1].StdOut);
        Assert.Equal(results[0].StdErr.Replace("qemu-img: ", ""), results[1].StdErr.Replace("vdisk: ", ""));
    }
}
