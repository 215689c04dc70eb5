using Vdisk.Nbd;
using Xunit;

namespace Vdisk.Tests.Nbd;

/// <summary>
/// What the server holds for clients that abuse it: large requests, replies never read, payloads cut off. Measured
/// by the server's own accounting (<see cref="NbdServer.Memory"/>), not the test process's memory, which other
/// tests running alongside move. The resident memory of a real `vdisk serve` is checked by the interop tests.
/// </summary>
public sealed class NbdServerMemoryTests() : NbdServerFixture(256 * MiB) // sparse: simple READs of it still fill whole buffers
{
    private const int MiB = 1 << 20;
    private const uint Big = 32 << 20;
    private readonly TaskCompletionSource _idle = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public override Task InitializeAsync() => Task.CompletedTask;

    private Task Start(int totalBytesInFlight = 128 * MiB) => StartAsync(new NbdServerOptions
    {
        MaxClients = 16, Persistent = true, MaxTotalBytesInFlight = totalBytesInFlight, Idle = () => _idle.TrySetResult(),
    });

    private static byte[] Reads(int count, uint length, ulong first = 0) => Enumerable.Range(0, count)
        .SelectMany(i => NbdTestClient.Request(NbdCommand.Read, (ulong)i, first + (ulong)i * length, length)).ToArray();

    /// <summary>A send that cannot finish (the server stopped reading when it should not have) fails the test, not hangs it.</summary>
    private static Task Send(NbdTestClient c, byte[] bytes) => c.SendAsync(bytes).WaitAsync(TimeSpan.FromSeconds(60));

    private static async Task Until(Func<bool> condition, string what)
    {
        // The deadline only guards against a hang on a very busy machine; the condition is what is tested.
        for (var deadline = DateTime.UtcNow.AddSeconds(60); !condition(); await Task.Delay(10))
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting until {what}");
    }

    [Fact]
    public async Task Clients_that_never_read_their_replies_hold_no_more_than_the_server_budget()
    {
        await Start(totalBytesInFlight: 64 * MiB);
        var clients = new List<NbdTestClient>();
        for (int i = 0; i < 3; i++)
        {
            var c = await Connected(structured: false);
            clients.Add(c);
            await Send(c, Reads(8, Big)); // each connection alone may hold 64 MiB
        }
        await Until(() => _server.Memory.BytesInFlight >= 64 * MiB, "the server budget is spent");
        // The readers are blocked now; if anything still took more, it would show within these samples.
        for (int i = 0; i < 20; i++)
        {
            var m = _server.Memory;
            Assert.True(m.BytesInFlight <= 64 * MiB, $"{m.BytesInFlight / MiB} MiB in flight");
            Assert.True(m.BuffersRented <= 64 * MiB + 2 * 4096, $"{m.BuffersRented / MiB} MiB of buffers rented");
            await Task.Delay(10);
        }
        foreach (var c in clients) await c.DisposeAsync();
        await _idle.Task.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(new NbdMemoryUsage(0, 0, 0), _server.Memory);
    }

    [Fact]
    public async Task A_client_that_never_reads_holds_no_write_payloads_once_they_are_written()
    {
        await Start();
        await using var c = await Connected(structured: false);
        // A READ reply larger than any socket buffer gets stuck (the client never reads): later replies wait behind it.
        await Send(c, Reads(1, Big, first: 200 * MiB));
        await Until(() => _server.Memory.BuffersRented >= Big, "the READ has its buffer");
        var writes = Enumerable.Range(0, 16).SelectMany(i =>
            NbdTestClient.Request(NbdCommand.Write, (ulong)(100 + i), (ulong)i * MiB, MiB, payload: Enumerable.Repeat((byte)(i + 1), MiB).ToArray()));
        await Send(c, writes.ToArray());
        var block = new byte[MiB];
        await Until(() => Enumerable.Range(0, 16).All(i =>
        {
            _image.Read(i * MiB, block.AsSpan());
            return block.AsSpan().IndexOfAnyExcept((byte)(i + 1)) < 0;
        }), "all 16 writes are in the image");
        // Their 16-byte replies still wait, but their payloads and budget are given back: only the READ holds any.
        await Until(() => _server.Memory.BytesInFlight == Big, "only the READ's 32 MiB are in flight");
        Assert.InRange(_server.Memory.BuffersRented, Big, Big + 4096);
    }

    [Fact]
    public async Task Everything_clients_held_is_given_back_when_they_leave()
    {
        await Start();
        // A payload cut off halfway; READs whose replies are never read; a large write done properly.
        var cut = await Connected(structured: false);
        await Send(cut, NbdTestClient.Request(NbdCommand.Write, 1, 0, Big, payload: new byte[Big / 2]));
        var unread = await Connected(structured: false);
        await Send(unread, Reads(4, Big));
        var heavy = await Connected(structured: true);
        await Send(heavy, NbdTestClient.Request(NbdCommand.Write, 7, 64 * MiB, Big, payload: new byte[Big]));
        Assert.Equal(0u, (await heavy.ReadReplyAsync()).ErrorCode);
        await heavy.SendRequestAsync(NbdCommand.BlockStatus, 8, 0, 64 * MiB);
        Assert.Equal(0u, (await heavy.ReadReplyAsync()).ErrorCode);
        await heavy.SendRequestAsync(NbdCommand.Cache, 9, 0, 8 * MiB);
        Assert.Equal(0u, (await heavy.ReadReplyAsync()).ErrorCode);
        await Until(() => _server.Memory.BuffersRented >= 2 * (long)Big, "the cut-off payload and the unread READs hold buffers");
        await cut.DisposeAsync();
        await unread.DisposeAsync();
        await heavy.DisposeAsync();
        await _idle.Task.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(0, _server.ClientCount);
        Assert.Equal(new NbdMemoryUsage(0, 0, 0), _server.Memory);
    }
}
