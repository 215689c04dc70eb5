using System.Buffers.Binary;
using Vdisk.Nbd;
using Xunit;

namespace Vdisk.Tests.Nbd;

/// <summary>The server's request handling: concurrency, errors, hostile and vanishing clients, stopping.</summary>
public sealed class NbdServerTests() : NbdServerFixture(Size)
{
    private const long Size = 16 << 20;

    public override Task InitializeAsync() => StartAsync(new NbdServerOptions { MaxClients = 300, Persistent = true });

    [Fact]
    public async Task Many_requests_in_flight_on_several_connections_match_a_shadow_copy()
    {
        const int Connections = 4, Block = 16 << 10, Depth = 64, Rounds = 12;
        var shadow = new byte[Size];
        long region = Size / Connections;
        int outOfOrder = 0;
        await Task.WhenAll(Enumerable.Range(0, Connections).Select(async n =>
        {
            await using var c = await Connected(structured: n % 2 == 0);
            var rng = new Random(n);
            for (int round = 0; round < Rounds; round++)
            {
                // Distinct blocks within a round, so that no two requests in flight overlap.
                var blocks = Enumerable.Range(0, (int)(region / Block)).OrderBy(_ => rng.Next()).Take(Depth).ToArray();
                var expected = new Dictionary<ulong, (long Offset, byte[]? Expect)>();
                var batch = new List<byte>();
                for (int i = 0; i < blocks.Length; i++)
                {
                    long offset = n * region + (long)blocks[i] * Block;
                    ulong cookie = (ulong)(round * 1000 + i);
                    if (rng.Next(2) == 0)
                    {
                        var data = new byte[Block];
                        rng.NextBytes(data);
                        data.CopyTo(shadow, offset);
                        batch.AddRange(NbdTestClient.Request(NbdCommand.Write, cookie, (ulong)offset, Block, payload: data));
                        expected[cookie] = (offset, null);
                    }
                    else
                    {
                        batch.AddRange(NbdTestClient.Request(NbdCommand.Read, cookie, (ulong)offset, Block));
                        expected[cookie] = (offset, shadow.AsSpan((int)offset, Block).ToArray());
                    }
                }
                await c.SendAsync(batch.ToArray());
                var reads = new Dictionary<ulong, byte[]>();
                ulong previous = 0;
                while (expected.Count > 0)
                {
                    var reply = await c.ReadReplyAsync(cookie => expected.TryGetValue(cookie, out var e) && e.Expect is not null ? Block : 0);
                    Assert.Equal(0u, reply.ErrorCode);
                    Assert.True(expected.ContainsKey(reply.Cookie), $"unexpected cookie {reply.Cookie}");
                    if (reply.Cookie < previous) Interlocked.Increment(ref outOfOrder);
                    previous = reply.Cookie;
                    var (offset, expect) = expected[reply.Cookie];
                    if (expect is not null)
                    {
                        if (!reads.TryGetValue(reply.Cookie, out var got)) reads[reply.Cookie] = got = new byte[Block];
                        if (reply.Type is null) reply.Data!.CopyTo(got, 0);
                        else NbdTestClient.ApplyReadChunk(reply, offset, got);
                        if (!reply.Done) continue;
                        Assert.Equal(expect, got);
                    }
                    if (reply.Done) expected.Remove(reply.Cookie);
                }
            }
            await c.SendRequestAsync(NbdCommand.Flush, 1, 0, 0);
            Assert.Equal(0u, (await c.ReadReplyAsync()).ErrorCode);
        }));
        var image = new byte[Size];
        _image.Read(0, image.AsMemory());
        Assert.True(shadow.AsSpan().SequenceEqual(image), "image differs from the shadow copy");
        Assert.True(outOfOrder > 0, "every reply came back in request order: requests did not run concurrently");
    }

    [Fact]
    public async Task Errors_are_qemu_nbds_and_the_connection_survives_them()
    {
        await using var c = await Connected();
        async Task<uint> Ask(NbdCommand cmd, ulong offset, uint length, NbdCommandFlags flags = 0, byte[]? payload = null)
        {
            await c.SendRequestAsync(cmd, 42, offset, length, flags, payload);
            var r = await c.ReadReplyAsync();
            Assert.Equal(42ul, r.Cookie);
            Assert.True(r.Done);
            return r.ErrorCode;
        }
        Assert.Equal(22u, await Ask(NbdCommand.Read, Size, 1));                     // past the end
        Assert.Equal(22u, await Ask(NbdCommand.Read, ulong.MaxValue - 1, 4096));    // offset + length wraps
        Assert.Equal(22u, await Ask(NbdCommand.Read, 0, (32 << 20) + 1));           // above the maximum
        Assert.Equal(22u, await Ask((NbdCommand)42, 0, 0));                         // unknown command
        Assert.Equal(22u, await Ask(NbdCommand.Flush, 0, 0, (NbdCommandFlags)0x8000)); // unknown flag
        Assert.Equal(22u, await Ask(NbdCommand.Write, Size - 1, 2, payload: [1, 2])); // payload consumed, then refused
        Assert.Equal(22u, await Ask(NbdCommand.WriteZeroes, Size, 4096));
        Assert.Equal(22u, await Ask(NbdCommand.Trim, Size - 4096, 8192));
        Assert.Equal(22u, await Ask(NbdCommand.BlockStatus, 0, 0));
        Assert.Equal(0u, await Ask(NbdCommand.Write, 0, 2, payload: [7, 8]));        // still in sync after all that
        Assert.Equal(0u, await Ask(NbdCommand.Flush, 0, 0));
    }

    [Fact]
    public async Task Block_status_reports_holes_and_data_and_req_one_stops_after_one_extent()
    {
        _image.Write(1 << 20, new byte[] { 1, 2, 3 }.AsMemory());
        _image.Discard(0, 1 << 20);
        await using var c = await Connected();
        await c.SendRequestAsync(NbdCommand.BlockStatus, 5, 0, 4 << 20);
        var all = await c.ReadReplyAsync();
        Assert.Equal(NbdReplyType.BlockStatus, all.Type);
        Assert.Equal(NbdHandshake.BaseAllocationId, BinaryPrimitives.ReadUInt32BigEndian(all.Data));
        var extents = Enumerable.Range(0, (all.Data!.Length - 4) / 8)
            .Select(i => (BinaryPrimitives.ReadUInt32BigEndian(all.Data.AsSpan(4 + 8 * i)), BinaryPrimitives.ReadUInt32BigEndian(all.Data.AsSpan(8 + 8 * i)))).ToList();
        Assert.Equal(4u << 20, (uint)extents.Sum(e => e.Item1));
        // Memory devices keep every written page as data: the write at 1 MiB must be data (flags 0).
        long at = 0;
        foreach (var (length, flags) in extents)
        {
            if (at <= 1 << 20 && 1 << 20 < at + length) Assert.Equal(0u, flags);
            at += length;
        }
        await c.SendRequestAsync(NbdCommand.BlockStatus, 6, 0, 4 << 20, NbdCommandFlags.ReqOne);
        var one = await c.ReadReplyAsync();
        Assert.Equal(4 + 8, one.Data!.Length);
        Assert.Equal(extents[0].Item1, BinaryPrimitives.ReadUInt32BigEndian(one.Data.AsSpan(4)));
    }

    [Fact]
    public async Task Write_header_claiming_4_GiB_gets_einval_then_a_hangup_and_others_carry_on()
    {
        await using var other = await Connected();
        await using var c = await Connected(structured: false);
        await c.SendAsync(NbdTestClient.Request(NbdCommand.Write, 9, 0, uint.MaxValue));
        var r = await c.ReadReplyAsync();
        Assert.Equal((9ul, 22u), (r.Cookie, r.Error));
        Assert.True(await c.ClosedWithinAsync(TimeSpan.FromSeconds(10)));
        await other.SendRequestAsync(NbdCommand.Read, 1, 0, 512);
        Assert.Equal(0u, (await other.ReadReplyAsync()).ErrorCode);
    }

    [Fact]
    public async Task Garbage_and_truncated_requests_end_only_that_connection()
    {
        await using var other = await Connected();
        await using (var garbage = await Connected())
        {
            var junk = new byte[64];
            new Random(1).NextBytes(junk);
            await garbage.SendAsync(junk);
            Assert.True(await garbage.ClosedWithinAsync(TimeSpan.FromSeconds(10)));
        }
        await using (var truncated = await Connected())
        {
            await truncated.SendAsync(NbdTestClient.Request(NbdCommand.Read, 1, 0, 512)[..20]);
        }
        await other.SendRequestAsync(NbdCommand.Read, 2, 0, 512);
        Assert.Equal(0u, (await other.ReadReplyAsync()).ErrorCode);
    }

    [Fact]
    public async Task A_client_stalling_in_the_handshake_is_dropped_after_the_timeout()
    {
        await _server.DisposeAsync();
        await StartAsync(new NbdServerOptions { MaxClients = 4, Persistent = true, HandshakeTimeout = TimeSpan.FromSeconds(1) });
        await using var staller = await NbdTestClient.ConnectAsync(_endPoint);
        await staller.ReceiveAsync(18); // greeting, then silence
        var started = DateTime.UtcNow;
        Assert.True(await staller.ClosedWithinAsync(TimeSpan.FromSeconds(10)));
        Assert.InRange((DateTime.UtcNow - started).TotalSeconds, 0.5, 5);
    }

    [Fact]
    public async Task A_thousand_connections_come_and_go_while_another_client_works()
    {
        await using var worker = await Connected();
        using var stop = new CancellationTokenSource();
        int served = 0;
        var work = Task.Run(async () =>
        {
            var data = new byte[4096];
            while (!stop.IsCancellationRequested)
            {
                data[0] = (byte)served;
                await worker.SendRequestAsync(NbdCommand.Write, 1, 8192, 4096, payload: data);
                Assert.Equal(0u, (await worker.ReadReplyAsync()).ErrorCode);
                served++;
            }
        });
        // A server that leaked its budget would stop reading: a send that cannot finish fails the test, not hangs it.
        var patience = TimeSpan.FromSeconds(30);
        for (int i = 0; i < 1000; i++)
        {
            var c = await NbdTestClient.ConnectAsync(_endPoint);
            switch (i % 4)
            {
                case 0: await c.ReceiveAsync(18); break; // leaves after the greeting
                case 1: break;                            // leaves at once
                case 2:                                   // leaves in the middle of a 1 MiB payload
                    await c.NegotiateAsync("exp", structured: false, baseAllocation: false);
                    await c.SendAsync(NbdTestClient.Request(NbdCommand.Write, 1, 0, 1 << 20, payload: new byte[1 << 19])).WaitAsync(patience);
                    break;
                case 3:                                   // leaves without reading the replies to 1 MiB of READs
                    await c.NegotiateAsync("exp", structured: false, baseAllocation: false);
                    await c.SendAsync(Enumerable.Range(0, 4).SelectMany(j => NbdTestClient.Request(NbdCommand.Read, (ulong)j, (ulong)j << 18, 1 << 18)).ToArray()).WaitAsync(patience);
                    break;
            }
            await c.DisposeAsync();
        }
        stop.Cancel();
        await work;
        Assert.True(served > 0);
        // Every dropped client is gone: only the worker remains. The deadlines only guard against a hang.
        for (var deadline = DateTime.UtcNow.AddSeconds(60); _server.ClientCount > 1 && DateTime.UtcNow < deadline;) await Task.Delay(20);
        Assert.Equal(1, _server.ClientCount);
        // Nothing the dropped clients held stays behind: with the worker idle, no buffer is out and no budget taken
        // (the worker's last request may still be finishing, hence the wait). What is kept for reuse stays bounded.
        // These are the server's own figures: other tests running in this process cannot move them.
        for (var deadline = DateTime.UtcNow.AddSeconds(60); _server.Memory is not { BuffersRented: 0, BytesInFlight: 0 } && DateTime.UtcNow < deadline;)
            await Task.Delay(20);
        var m = _server.Memory;
        Assert.Equal(0, m.BuffersRented);
        Assert.Equal(0, m.BytesInFlight);
        Assert.InRange(m.BuffersKept, 0, new NbdServerOptions().MaxTotalBytesInFlight);
    }

    [Fact]
    public async Task Stopping_lets_requests_in_flight_reply_then_closes()
    {
        await using var c = await Connected(structured: false);
        var batch = Enumerable.Range(0, 32).SelectMany(i => NbdTestClient.Request(NbdCommand.Write, (ulong)i, (ulong)i * 65536, 65536, payload: new byte[65536])).ToArray();
        await c.SendAsync(batch);
        await c.ReadReplyAsync(); // at least one has run
        var stopping = _server.StopAsync();
        var replies = 1;
        try
        {
            while (replies < 32) { Assert.Equal(0u, (await c.ReadReplyAsync()).Error); replies++; }
        }
        catch (Exception e) when (e is IOException or EndOfStreamException) { }
        await stopping.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.True(_server.Completion.IsCompleted);
        Assert.True(await c.ClosedWithinAsync(TimeSpan.FromSeconds(5)));
        Assert.Equal(0, _server.ClientCount);
    }
}
