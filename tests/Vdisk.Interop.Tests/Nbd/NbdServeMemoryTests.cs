using System.Net.Sockets;
using Vdisk.Nbd;
using Vdisk.Tests.Nbd;
using Xunit;
using Xunit.Abstractions;

namespace Vdisk.Interop.Tests.Nbd;

/// <summary>
/// The resident memory (VmRSS) of a real `vdisk serve` process while abusive clients hit it and after they have
/// left. The server runs alone in its process, so its RSS is its own, whatever the tests around do. It used to keep
/// the 32 MiB buffers it had used (the shared ArrayPool keeps them per core and per thread): 420 MiB after the first
/// round below and 530 MiB after the second, where qemu-nbd goes back to 10 MiB. bench/nbd-memory.sh runs the same
/// abuse, larger, with qemu-nbd side by side.
/// </summary>
public sealed class NbdServeMemoryTests(ITestOutputHelper output) : IDisposable
{
    private const int MiB = 1 << 20;
    private const uint Big = 32 << 20;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task Resident_memory_stays_bounded_under_abusive_clients_and_returns_after_they_leave()
    {
        var img = _dir.File("disk.qcow2");
        Assert.Equal(0, Tools.Run("qemu-img", "create", "-q", "-f", "qcow2", img, "256M").ExitCode);
        Assert.Equal(0, Tools.Run("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 128M", img).ExitCode);
        var socket = _dir.File("s.sock");
        // The gen0 cap the native build has (see Vdisk.Cli.csproj), for the JIT build these tests run by default.
        using var server = NbdServerProcess.Vdisk(_dir, new Dictionary<string, string> { ["DOTNET_GCgen0MaxBudget"] = "1000000" },
            "-f", "qcow2", "-t", "-e", "16", "-k", socket, img);
        var endPoint = new UnixDomainSocketEndPoint(socket);
        await using (var c = await NbdTestClient.ConnectAsync(endPoint)) await c.NegotiateAsync("", structured: true, baseAllocation: false);
        long fresh = await SettledRssAsync(server.Pid);

        long peak = 0;
        void Sample() => peak = Math.Max(peak, Rss(server.Pid));
        // A first round runs (and compiles) every path; then the same again, larger. After each, everything the
        // clients held must be given back: the resident memory goes back under twice the fresh figure, and the
        // second round leaves no more behind than the first.
        await AbuseAsync(endPoint, churn: 50, Sample);
        long warm = await RssOnceAtMostAsync(server.Pid, 2 * fresh);
        await AbuseAsync(endPoint, churn: 400, Sample);
        long after = await RssOnceAtMostAsync(server.Pid, Math.Min(2 * fresh, warm + 24 * MiB));
        string figures = $"vdisk serve RSS: fresh {fresh / MiB} MiB, after a first round {warm / MiB} MiB, peak {peak / MiB} MiB, after {after / MiB} MiB";
        output.WriteLine(figures);
        Assert.True(warm <= 2 * fresh, figures);
        Assert.True(after <= 2 * fresh && after <= warm + 24 * MiB, figures);
        // Under load: the server's budget for all clients (128 MiB, requests in flight and the buffers it keeps
        // for reuse) above that idle figure, and 32 MiB for the rest (GC heap, small buffers, thread stacks).
        Assert.True(peak <= 2 * fresh + 160 * MiB, figures);
        Assert.Equal(0, server.Stop());
    }

    /// <summary>
    /// Eight clients at once: two pipeline 32 MiB READs and never read a reply, two do the same with WRITEs; one
    /// writes 32 MiB at a time and one reads 32 MiB at a time, reading their replies; one breaks the protocol in
    /// several ways; one makes <paramref name="churn"/> connections that come and go. <paramref name="sample"/> runs
    /// every 20 ms meanwhile.
    /// </summary>
    private static async Task AbuseAsync(UnixDomainSocketEndPoint endPoint, int churn, Action sample)
    {
        using var done = new CancellationTokenSource();
        var sampler = Task.Run(async () =>
        {
            while (!done.IsCancellationRequested)
            {
                sample();
                await Task.Delay(20);
            }
        });
        await Task.WhenAll(
            NonReaderAsync(endPoint, NbdCommand.Read), NonReaderAsync(endPoint, NbdCommand.Read),
            NonReaderAsync(endPoint, NbdCommand.Write), NonReaderAsync(endPoint, NbdCommand.Write),
            HeavyAsync(endPoint, NbdCommand.Write), HeavyAsync(endPoint, NbdCommand.Read),
            MalformedAsync(endPoint), ChurnAsync(endPoint, churn));
        await done.CancelAsync();
        await sampler;
    }

    private static readonly byte[] Payload = Enumerable.Range(0, (int)Big).Select(i => (byte)(i * 7)).ToArray();

    private static async Task NonReaderAsync(UnixDomainSocketEndPoint endPoint, NbdCommand command)
    {
        await using var c = await NbdTestClient.ConnectAsync(endPoint);
        await c.NegotiateAsync("", structured: false, baseAllocation: false);
        // Sends until the server stops reading (its budget for this client is spent), or 8 requests; never reads.
        using var hold = new CancellationTokenSource(TimeSpan.FromSeconds(3));
        try
        {
            for (int i = 0; i < 8; i++)
                await c.SendAsync(NbdTestClient.Request(command, (ulong)i, (ulong)i * Big % (192 * MiB), Big,
                    payload: command == NbdCommand.Write ? Payload : null)).WaitAsync(hold.Token);
        }
        catch (OperationCanceledException) { }
        try { await Task.Delay(Timeout.Infinite, hold.Token); }
        catch (OperationCanceledException) { }
    }

    private static async Task HeavyAsync(UnixDomainSocketEndPoint endPoint, NbdCommand command)
    {
        await using var c = await NbdTestClient.ConnectAsync(endPoint);
        await c.NegotiateAsync("", structured: true, baseAllocation: false);
        for (int i = 0; i < 4; i++)
        {
            ulong offset = (ulong)i * Big;
            await c.SendRequestAsync(command, (ulong)i, offset, Big, payload: command == NbdCommand.Write ? Payload : null);
            NbdTestReply reply;
            do Assert.Equal(0u, (reply = await c.ReadReplyAsync()).ErrorCode);
            while (!reply.Done);
        }
    }

    private static async Task MalformedAsync(UnixDomainSocketEndPoint endPoint)
    {
        for (int i = 0; i < 40; i++)
        {
            await using var c = await NbdTestClient.ConnectAsync(endPoint);
            try
            {
                if (i % 4 == 0)
                {
                    await c.ReceiveAsync(18);
                    await c.SendAsync(Enumerable.Repeat((byte)0xa5, 64).ToArray()); // garbage for flags and options
                    continue;
                }
                await c.NegotiateAsync("", structured: i % 2 == 0, baseAllocation: false);
                byte[] bytes = (i % 4) switch
                {
                    1 => NbdTestClient.Request(NbdCommand.Write, 1, 0, Big, payload: Payload[..(int)(Big / 2)]), // cut off
                    2 => NbdTestClient.Request(NbdCommand.Write, 1, 0, 64 << 20),                                // too large
                    _ => [.. NbdTestClient.Request(NbdCommand.Read, 1, 0, 4096), 0xde, 0xad, 0xbe, 0xef],        // bad magic next
                };
                await c.SendAsync(bytes);
                await c.ClosedWithinAsync(TimeSpan.FromMilliseconds(100));
            }
            catch (Exception e) when (e is IOException or SocketException or EndOfStreamException) { }
        }
    }

    private static async Task ChurnAsync(UnixDomainSocketEndPoint endPoint, int count)
    {
        for (int i = 0; i < count; i++)
        {
            await using var c = await NbdTestClient.ConnectAsync(endPoint);
            try
            {
                if (i % 3 == 0) continue;
                await c.ReceiveAsync(18);
                if (i % 3 == 1) continue;
                await c.SendAsync(NbdTestClient.ClientFlags(3));
                await c.NegotiateAfterGreetingAsync("", structured: false, baseAllocation: false);
                await c.SendAsync(NbdTestClient.Request(NbdCommand.Read, 1, 0, MiB)); // gone before the reply
            }
            catch (Exception e) when (e is IOException or SocketException or EndOfStreamException) { }
        }
    }

    private static long Rss(int pid)
    {
        foreach (var line in File.ReadLines($"/proc/{pid}/status"))
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        throw new InvalidOperationException("no VmRSS");
    }

    /// <summary>
    /// The RSS once it is at most <paramref name="bound"/> (the server gives memory back just after the last client
    /// left, which it sees a moment after the client does), or after 60 s: a deadline that only guards against a hang.
    /// </summary>
    private static async Task<long> RssOnceAtMostAsync(int pid, long bound)
    {
        long rss = Rss(pid);
        for (var deadline = DateTime.UtcNow.AddSeconds(60); rss > bound && DateTime.UtcNow < deadline; rss = Rss(pid)) await Task.Delay(100);
        return rss;
    }

    /// <summary>The RSS once it has stopped moving.</summary>
    private static async Task<long> SettledRssAsync(int pid)
    {
        long previous = -1, now = Rss(pid);
        for (int i = 0; i < 50 && Math.Abs(now - previous) > MiB / 4; i++)
        {
            await Task.Delay(200);
            (previous, now) = (now, Rss(pid));
        }
        return now;
    }
}
