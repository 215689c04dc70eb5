using Xunit;

namespace Vdisk.Tests.Cli;

/// <summary>What the commands say when the file cannot be an image at all: qemu-img's words, not .NET's.</summary>
public class OpenErrorTests
{
    [Fact]
    public void ADirectoryIsNotARegularFile()
    {
        using var cli = new CliHarness();
        var dir = cli.PathOf("adir");
        Directory.CreateDirectory(dir);

        // Read-only opens: qemu's file driver opens a directory and then refuses anything but a regular file.
        foreach (var args in new[] { new[] { "info", dir }, new[] { "check", dir }, new[] { "map", dir }, new[] { "info", "-f", "raw", dir } })
        {
            var r = cli.Run(args);
            Assert.Equal(1, r.Exit);
            Assert.Equal($"vdisk: Could not open '{dir}': 'file' driver requires '{dir}' to be a regular file\n", r.Err);
        }
        // Read-write: open(2) itself refuses with EISDIR.
        var io = cli.Run("io", "-c", "read 0 512", dir);
        Assert.Equal(1, io.Exit);
        Assert.Equal($"vdisk: can't open device {dir}: Could not open '{dir}': Is a directory\n", io.Err);
        var create = cli.Run("create", "-q", "-f", "qcow2", dir, "1M");
        Assert.Equal(1, create.Exit);
        Assert.Equal($"vdisk: {dir}: Could not create '{dir}': Is a directory\n", create.Err);
        Assert.DoesNotContain("Permission denied", io.Err + create.Err);
    }

    [Fact]
    public void AMissingFolderIsNamedOnCreate()
    {
        using var cli = new CliHarness();
        var file = cli.PathOf("no/such/folder/x.qcow2");
        var r = cli.Run("create", "-q", "-f", "qcow2", file, "1M");
        Assert.Equal(1, r.Exit);
        Assert.Equal($"vdisk: {file}: Could not create '{file}': No such file or directory\n", r.Err);
    }
}
