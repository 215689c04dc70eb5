using System.Diagnostics;
using Xunit;

namespace Vdisk.Interop.Tests.Cli;

/// <summary>Ctrl-C (SIGINT) during convert: the target is removed, never left half-written without a word.</summary>
public class ConvertInterruptTests
{
    [Fact]
    public async Task SigintDuringConvertRemovesTheTargetAndSaysSo()
    {
        using var dir = new TempDir();
        var src = dir.File("src.raw");
        var dst = dir.File("dst.qcow2");
        var data = new byte[1 << 20];
        var rng = new Random(7);
        using (var f = File.Create(src))
            for (int i = 0; i < 256; i++) { rng.NextBytes(data); f.Write(data); }

        var dll = Path.Combine(AppContext.BaseDirectory, "Vdisk.Cli.dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        // -r 2M: the 256 MiB copy takes two minutes however fast the machine is, so the signal always lands midway
        // (the first chunks go at once; the wait below is for a busy machine to start the process at all).
        foreach (var a in new[] { dll, "convert", "-r", "2M", "-f", "raw", "-O", "qcow2", src, dst }) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        var deadline = DateTime.UtcNow.AddMinutes(2);
        while (!File.Exists(dst) || new FileInfo(dst).Length < (2 << 20))
        {
            Assert.False(p.HasExited, "convert finished before it could be interrupted");
            Assert.True(DateTime.UtcNow < deadline, "convert made no progress");
            await Task.Delay(20);
        }
        Assert.Equal(0, Tools.Run("kill", "-INT", p.Id.ToString()).ExitCode);
        Assert.True(p.WaitForExit(30_000), "convert did not stop after SIGINT");
        Assert.NotEqual(0, p.ExitCode);
        Assert.False(File.Exists(dst), "an interrupted convert that created its target must remove it");
        Assert.False(string.IsNullOrWhiteSpace(await stderr), "the interruption must be reported");
    }

    [Fact]
    public void RateLimitCountsDataOnly()
    {
        // 1 KiB/s over 64 MiB would take 18 hours if the holes counted; they move no data, so it ends at once.
        using var dir = new TempDir();
        var src = dir.File("sparse.raw");
        using (var f = File.Create(src)) { f.SetLength(64 << 20); f.Position = 1 << 20; f.Write(new byte[] { 1 }); }
        var dst = dir.File("out.qcow2");
        var r = Tools.Vdisk("convert", "-r", "1k", "-f", "raw", "-O", "qcow2", src, dst);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal(0, Tools.Run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", src, dst).ExitCode);
    }
}
