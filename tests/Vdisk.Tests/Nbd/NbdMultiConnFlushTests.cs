using System.Net.Sockets;
using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;
using Vdisk.Nbd;
using Xunit;

namespace Vdisk.Tests.Nbd;

/// <summary>
/// CAN_MULTI_CONN is a promise: a FLUSH on one connection makes durable every write the server has acknowledged on
/// any connection. The qcow2 file sits under a fault-injecting device whose simulated power loss keeps only what a
/// flush covered, so "durable" means: present after the crash.
/// </summary>
public sealed class NbdMultiConnFlushTests : IDisposable
{
    private const long Size = 64 << 20;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "vdisk-mc-" + Guid.NewGuid().ToString("N")[..8]);

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    [Fact]
    public async Task A_flush_on_one_connection_makes_writes_acknowledged_on_the_others_survive_a_crash()
    {
        Directory.CreateDirectory(_dir);
        string path = Path.Combine(_dir, "mc.qcow2");
        using (var created = FileBlockDevice.Create(path)) new Qcow2Format().Create(created, new ImageCreateOptions { Size = Size });
        var faults = new FaultInjectingBlockDevice(FileBlockDevice.Open(path));
        var image = Qcow2Image.Open(faults, new ImageOpenOptions());
        string socket = Path.Combine(_dir, "s");
        var server = new NbdServer([new NbdExport("exp", image) { MultiConn = true }], new NbdServerOptions { MaxClients = 4, Persistent = true });
        server.ListenUnix(socket);
        server.Start();
        try
        {
            var endPoint = new UnixDomainSocketEndPoint(path: socket);
            await using var a1 = await NbdTestClient.ConnectAsync(endPoint);
            await using var a2 = await NbdTestClient.ConnectAsync(endPoint);
            await using var b = await NbdTestClient.ConnectAsync(endPoint);
            foreach (var (c, structured) in new[] { (a1, false), (a2, true), (b, true) })
                Assert.True((await c.NegotiateAsync("exp", structured, structured)).Flags.HasFlag(NbdTransmissionFlags.CanMultiConn));

            // A1 and A2 write new clusters (data, new L2 tables, refcounts), 32 requests in flight each, and get every reply.
            var rng = new Random(6);
            var written = new List<(long Offset, byte[] Data)>();
            foreach (var (c, first) in new[] { (a1, 0L), (a2, 32L << 20) })
            {
                var batch = new List<byte>();
                for (int i = 0; i < 32; i++)
                {
                    var data = new byte[rng.Next(1, 129) * 512];
                    rng.NextBytes(data);
                    long at = first + i * (1L << 20) + rng.Next(64) * 512;
                    written.Add((at, data));
                    batch.AddRange(NbdTestClient.Request(NbdCommand.Write, (ulong)i, (ulong)at, (uint)data.Length, payload: data));
                }
                await c.SendAsync(batch.ToArray());
                for (int i = 0; i < 32; i++) Assert.Equal(0u, (await c.ReadReplyAsync()).ErrorCode);
            }

            // Control: acknowledged is not yet durable, so a crash now would lose them (else the test proves nothing).
            Assert.True(faults.UnflushedCount > 0);
            Assert.True(Missing(faults.SimulateCrash(), written) > 0, "the writes were durable before any FLUSH");

            // B, which wrote nothing, flushes; A1 and A2 stay connected and silent.
            await b.SendRequestAsync(NbdCommand.Flush, 77, 0, 0);
            var reply = await b.ReadReplyAsync();
            Assert.Equal((77ul, 0u), (reply.Cookie, reply.ErrorCode));
            Assert.Equal(0, Missing(faults.SimulateCrash(), written));
        }
        finally
        {
            await server.DisposeAsync();
            image.Dispose();
        }
    }

    /// <summary>Opens the crash state as a qcow2 image (no corruption allowed) and counts the writes that are not all there.</summary>
    private static int Missing(MemoryBlockDevice crashState, List<(long Offset, byte[] Data)> written)
    {
        using var crashed = Qcow2Image.Open(crashState, new ImageOpenOptions());
        var check = crashed.Check();
        Assert.True(check.Corruptions == 0 && check.CheckErrors == 0, string.Join("\n", check.Messages));
        int missing = 0;
        foreach (var (offset, data) in written)
        {
            var got = new byte[data.Length];
            crashed.Read(offset, got.AsMemory());
            if (!got.AsSpan().SequenceEqual(data)) missing++;
        }
        return missing;
    }
}
