using System.Net.Sockets;
using Vdisk.Nbd;
using Vdisk.Tests.Nbd;
using Xunit;

namespace Vdisk.Interop.Tests.Nbd;

/// <summary>
/// What `vdisk serve` does with hostile or odd clients, checked side by side with qemu-nbd 7.2 where qemu-nbd is
/// the reference, and the process-level behaviour (-s, exit after the last client, handshake limit).
/// </summary>
public sealed class NbdServeBehaviourTests : IDisposable
{
    private readonly TempDir _dir = new();
    public void Dispose() => _dir.Dispose();

    private string Image(string format = "qcow2")
    {
        var img = _dir.File("img." + format);
        Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", format, img, "16M").ExitCode);
        return img;
    }

    /// <summary>The answers a raw client gets to a list of bad requests, as comparable text.</summary>
    private static async Task<List<string>> Probe(string socket)
    {
        var answers = new List<string>();
        var endPoint = new UnixDomainSocketEndPoint(socket);
        await using (var c = await NbdTestClient.ConnectAsync(endPoint))
        {
            await c.ReceiveAsync(18);
            await c.SendAsync(NbdTestClient.ClientFlags(1));
            await c.SendAsync(NbdTestClient.Option((NbdOption)0x7654321, []));
            answers.Add("unknown option: " + (await c.ReadOptionReplyAsync()).Type);
            await c.SendAsync(NbdTestClient.Option(NbdOption.Go, NbdTestClient.InfoPayload("nope")));
            answers.Add("unknown export: " + (await c.ReadOptionReplyAsync()).Type);
        }
        foreach (bool structured in new[] { false, true })
        {
            await using var c = await NbdTestClient.ConnectAsync(endPoint);
            await c.NegotiateAsync("exp", structured, baseAllocation: false);
            async Task Ask(string what, NbdCommand cmd, ulong offset, uint length, NbdCommandFlags flags = 0, byte[]? payload = null)
            {
                await c.SendRequestAsync(cmd, 0xdeadbeefcafef00d, offset, length, flags, payload);
                var r = await c.ReadReplyAsync(_ => (int)length);
                answers.Add($"{what} (structured {structured}): cookie {r.Cookie:x} error {r.ErrorCode} type {r.Type}");
            }
            await Ask("read past end", NbdCommand.Read, 16 << 20, 512);
            await Ask("read 0 bytes", NbdCommand.Read, 0, 0);
            await Ask("unknown command", (NbdCommand)42, 0, 0);
            await Ask("unknown flag", NbdCommand.Read, 0, 512, (NbdCommandFlags)0x8000);
            await Ask("block status without context", NbdCommand.BlockStatus, 0, 4096);
            await Ask("trim past end", NbdCommand.Trim, 16 << 20, 4096);
            await Ask("write past end", NbdCommand.Write, (16 << 20) - 1, 2, payload: [1, 2]);
            await Ask("flush", NbdCommand.Flush, 0, 0);
            await Ask("read 33 MiB", NbdCommand.Read, 0, 33 << 20);
            await c.SendRequestAsync(NbdCommand.Write, 1, 0, 64 << 20);
            answers.Add($"64 MiB write header: error {(await c.ReadReplyAsync()).ErrorCode}, closed {await c.ClosedWithinAsync(TimeSpan.FromSeconds(10))}");
        }
        await using (var c = await NbdTestClient.ConnectAsync(endPoint))
        {
            await c.NegotiateAsync("exp", structured: false, baseAllocation: false);
            var bad = NbdTestClient.Request(NbdCommand.Read, 3, 0, 512);
            bad[0] ^= 0xff;
            await c.SendAsync(bad);
            answers.Add($"bad magic: error {(await c.ReadReplyAsync()).Error}, closed {await c.ClosedWithinAsync(TimeSpan.FromSeconds(10))}");
        }
        return answers;
    }

    [Fact]
    public async Task Bad_requests_get_the_same_answers_as_from_qemu_nbd()
    {
        var img = Image();
        string vs = _dir.File("v.sock"), qs = _dir.File("q.sock");
        List<string> mine, theirs;
        using (var vdisk = NbdServerProcess.Vdisk(_dir, "-f", "qcow2", "-t", "-e", "4", "-k", vs, "-x", "exp", img))
        {
            mine = await Probe(vs);
            Assert.Equal(0, vdisk.Stop());
        }
        using (var qemu = NbdServerProcess.QemuNbd(_dir, "-f", "qcow2", "-t", "--shared=4", "-k", qs, "-x", "exp", img))
            theirs = await Probe(qs);
        Assert.Equal(theirs, mine);
        Assert.Contains("read past end (structured True): cookie deadbeefcafef00d error 22 type Error", mine);
    }

    [Fact]
    public async Task A_client_silent_after_the_greeting_is_dropped_after_10_seconds()
    {
        string vs = _dir.File("v.sock");
        using var vdisk = NbdServerProcess.Vdisk(_dir, "-t", "-k", vs, Image("raw"));
        await using var c = await NbdTestClient.ConnectAsync(new UnixDomainSocketEndPoint(vs));
        await c.ReceiveAsync(18);
        var started = DateTime.UtcNow;
        Assert.True(await c.ClosedWithinAsync(TimeSpan.FromSeconds(20)));
        Assert.InRange((DateTime.UtcNow - started).TotalSeconds, 9, 12);
        Assert.Equal(0, vdisk.Stop());
    }

    [Theory]
    [InlineData("off")]
    [InlineData("on")]
    public void Sigkill_after_flush_and_fua_replies_keeps_every_acknowledged_byte(string lazy)
    {
        var img = _dir.File("kill.qcow2");
        Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "qcow2", "-o", $"lazy_refcounts={lazy}", img, "64M").ExitCode);
        string vs = _dir.File("kill.sock");
        using var vdisk = NbdServerProcess.Vdisk(_dir, "-t", "--cache=writeback", "-k", vs, img);
        // Flushed data, a FUA write, then writes nobody flushed; the server dies right after the last reply.
        var r = Tools.Run("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 4M", "-c", "flush", "-c", "write -f -P 0x6b 8M 1M",
            "-c", "write -P 0x7c 16M 4M", "-c", "write -P 0x7d 2M 64k", $"nbd+unix:///?socket={vs}");
        Assert.True(r.ExitCode == 0 && !(r.StdOut + r.StdErr).Contains("failed"), r.ToString());
        vdisk.KillHard();

        var check = Tools.Run("qemu-img", "check", img);
        if (lazy == "off") Assert.True(check.ExitCode is 0 or 3, "with lazy refcounts off at most leaks: " + check);
        else
        {
            Assert.Contains("cleanly shut down: no", Tools.Run("qemu-img", "info", img).StdOut);
            Assert.Equal(0, Tools.Run("qemu-img", "check", "-q", "-r", "all", img).ExitCode);
        }
        Assert.Equal(0, Tools.Run("qemu-img", "check", "-q", "-r", "leaks", img).ExitCode);
        Assert.Equal(0, Tools.Run("qemu-img", "check", img).ExitCode);
        // 2M..2M+64k was overwritten after the flush: old or new content, either is allowed; the rest must be exact.
        var read = Tools.Run("qemu-io", "-f", "qcow2", "-c", "read -P 0x5a 0 2M", "-c", "read -P 0x5a 2112k 1984k",
            "-c", "read -P 0x6b 8M 1M", img);
        Assert.True(read.ExitCode == 0 && !(read.StdOut + read.StdErr).Contains("fail") && !read.StdOut.Contains("Pattern verification"), read.ToString());
    }

    [Fact]
    public void Without_t_the_server_exits_when_its_client_leaves()
    {
        string vs = _dir.File("v.sock");
        using var vdisk = NbdServerProcess.Vdisk(_dir, "-k", vs, Image("raw"));
        Assert.Equal(0, Tools.Run("nbdinfo", $"nbd+unix:///?socket={vs}").ExitCode);
        Assert.True(vdisk.WaitForExit(TimeSpan.FromSeconds(20)), "server still running after its only client left");
        Assert.Equal(0, vdisk.ExitCode);
        Assert.False(File.Exists(vs), "the unix socket was left behind");
    }

    [Fact]
    public void Snapshot_mode_keeps_writes_away_from_the_image_and_removes_its_overlay()
    {
        var img = Image();
        var before = File.ReadAllBytes(img);
        string vs = _dir.File("v.sock");
        using var vdisk = NbdServerProcess.Vdisk(_dir, "-s", "-t", "-k", vs, img);
        var overlays = Directory.GetFiles("/var/tmp", "vdisk-nbd-snapshot-*");
        Assert.NotEmpty(overlays);
        var r = Tools.Run("qemu-io", "-f", "raw", "-c", "write -P 0x77 1M 64k", "-c", "read -P 0x77 1M 64k", $"nbd+unix:///?socket={vs}");
        Assert.DoesNotContain("failed", r.StdOut + r.StdErr);
        Assert.Equal(0, vdisk.Stop());
        Assert.Equal(before, File.ReadAllBytes(img));
        Assert.All(overlays, o => Assert.False(File.Exists(o), $"{o} left behind"));
    }

    [Fact]
    public async Task Read_only_export_refuses_writes_with_eperm()
    {
        string vs = _dir.File("v.sock");
        using var vdisk = NbdServerProcess.Vdisk(_dir, "-r", "-t", "-k", vs, Image());
        Assert.NotEqual(0, Tools.Run("nbdinfo", "--can", "write", $"nbd+unix:///?socket={vs}").ExitCode);
        await using (var c = await NbdTestClient.ConnectAsync(new UnixDomainSocketEndPoint(vs)))
        {
            var (_, flags) = await c.NegotiateAsync("", structured: false, baseAllocation: false);
            Assert.True(flags.HasFlag(NbdTransmissionFlags.ReadOnly));
            foreach (var (cmd, payload) in new[] { (NbdCommand.Write, new byte[512]), (NbdCommand.WriteZeroes, null), (NbdCommand.Trim, null) })
            {
                await c.SendRequestAsync(cmd, 1, 0, 512, payload: payload);
                Assert.Equal(1u, (await c.ReadReplyAsync()).Error); // EPERM
            }
        }
        Assert.Equal(0, vdisk.Stop());
    }
}
