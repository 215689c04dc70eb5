using Xunit;

namespace Vdisk.Interop.Tests.Cli;

/// <summary>`vdisk convert -l` copies an internal snapshot, as `qemu-img convert -l` does.</summary>
public class ConvertSnapshotTests
{
    [Theory]
    [InlineData("snapshot.name=s1")]
    [InlineData("s1")]
    [InlineData("snapshot.id=1")]
    public void ConvertOfASnapshotEqualsQemuImgs(string param)
    {
        using var dir = new TempDir();
        var src = dir.File("src.qcow2");
        Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "qcow2", src, "4M").ExitCode);
        Assert.Equal(0, Tools.Run("qemu-io", "-c", "write -P 1 0 1M", src).ExitCode);
        Assert.Equal(0, Tools.Run("qemu-img", "snapshot", "-c", "s1", src).ExitCode);
        Assert.Equal(0, Tools.Run("qemu-io", "-c", "write -P 2 0 512k", "-c", "write -P 3 2M 64k", src).ExitCode);
        var theirs = dir.File("theirs.qcow2");
        var ours = dir.File("ours.qcow2");
        Assert.Equal(0, Tools.Run("qemu-img", "convert", "-O", "qcow2", "-l", "snapshot.name=s1", src, theirs).ExitCode);
        var v = Tools.Vdisk("convert", "-O", "qcow2", "-l", param, src, ours);
        Assert.True(v.ExitCode == 0, v.ToString());
        Assert.Equal(0, Tools.Run("qemu-img", "compare", theirs, ours).ExitCode);
        Assert.NotEqual(0, Tools.Run("qemu-img", "compare", src, ours).ExitCode); // the snapshot, not the current state
        Assert.Equal(0, Tools.Run("qemu-img", "check", ours).ExitCode);
    }

    [Fact]
    public void UnknownSnapshotFailsLikeQemuImg()
    {
        using var dir = new TempDir();
        var src = dir.File("src.qcow2");
        Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "qcow2", src, "1M").ExitCode);
        var q = Tools.Run("qemu-img", "convert", "-O", "raw", "-l", "snapshot.name=nope", src, dir.File("q.raw"));
        var v = Tools.Vdisk("convert", "-O", "raw", "-l", "snapshot.name=nope", src, dir.File("v.raw"));
        Assert.Equal(q.ExitCode, v.ExitCode);
        Assert.Contains("Can't find snapshot", v.StdErr);
        Assert.False(File.Exists(dir.File("v.raw")));
    }

    [Fact]
    public void MeasureOfASnapshotEqualsQemuImgs()
    {
        using var dir = new TempDir();
        var src = dir.File("src.qcow2");
        Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "qcow2", src, "16M").ExitCode);
        Assert.Equal(0, Tools.Run("qemu-io", "-c", "write -P 1 0 256k", src).ExitCode);
        Assert.Equal(0, Tools.Run("qemu-img", "snapshot", "-c", "s1", src).ExitCode);
        Assert.Equal(0, Tools.Run("qemu-io", "-c", "write -P 2 1M 4M", src).ExitCode);
        var q = Tools.Run("qemu-img", "measure", "--output=json", "-O", "qcow2", "-l", "snapshot.name=s1", src);
        var v = Tools.Vdisk("measure", "--output=json", "-O", "qcow2", "-l", "snapshot.name=s1", src);
        Assert.Equal(0, q.ExitCode);
        Assert.Equal(q.StdOut, v.StdOut);
        var current = Tools.Vdisk("measure", "--output=json", "-O", "qcow2", src);
        Assert.NotEqual(current.StdOut, v.StdOut); // the snapshot was measured, not the current state
    }
}
