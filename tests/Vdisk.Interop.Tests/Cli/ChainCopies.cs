using Vdisk.Interop.Tests.Qcow2;
using Xunit;

namespace Vdisk.Interop.Tests.Cli;

/// <summary>Helpers for the rebase/commit tests: twin copies of a chain (one for vdisk, one for qemu-img) and layer maps.</summary>
public static class ChainCopies
{
    /// <summary>Copies the files of <paramref name="dir"/> into a fresh subfolder; relative backing names keep working.</summary>
    public static string Twin(TempDir dir, string name)
    {
        var twin = dir.File(name);
        Directory.CreateDirectory(twin);
        foreach (var f in Directory.GetFiles(dir.Path_)) File.Copy(f, Path.Combine(twin, Path.GetFileName(f)));
        return twin;
    }

    /// <summary>The ranges the image itself allocates (depth 0 in qemu-img map), as "start+length zero/data" lines.</summary>
    public static string TopLayer(string path) =>
        string.Join("\n", Qemu.Map(path).Where(r => r.Depth == 0 && r.Present).Select(r => $"{r.Start}+{r.Length} zero={r.Zero} data={r.Data}"));

    /// <summary>The guest view of an image through its chain, as qemu-img convert reads it.</summary>
    public static byte[] Guest(string path) => Qemu.ConvertToRaw(path, path + ".guest.raw");

    public static void AssertInfo(string path, string? backing, string? backingFormat)
    {
        var info = Qemu.MustRun("qemu-img", "info", "--output=json", path).StdOut;
        if (backing is null) Assert.DoesNotContain("backing-filename", info);
        else Assert.Contains($"\"backing-filename\": \"{backing}\"", info);
        if (backingFormat is null) Assert.DoesNotContain("backing-filename-format", info);
        else Assert.Contains($"\"backing-filename-format\": \"{backingFormat}\"", info);
    }

    public static void AssertSameResult(ToolResult theirs, ToolResult ours)
    {
        Assert.Equal(theirs.ExitCode, ours.ExitCode);
        Assert.Equal(theirs.StdErr.Replace("qemu-img:", "vdisk:").Replace("'qemu-img --help'", "'vdisk --help'"), ours.StdErr);
    }
}
