using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Vdisk.BlockIO;
using Vdisk.Images;
using Vdisk.Nbd;
using Xunit;
using Xunit.Abstractions;

namespace Vdisk.Tests.Nbd;

/// <summary>
/// The concurrency soak of issue 6, after libnbd's aio-parallel: 8 connections with 64 requests in flight each,
/// against a qcow2 overlay on a real file (cache=writeback) with a qcow2 backing file under part of it, served
/// in-process with CAN_MULTI_CONN. Mixed reads, writes, write-zeroes, trims, flushes and block-status requests of
/// 512 B to 256 KiB (1 MiB for zeroing and trimming), aligned and not; half the connections use structured replies.
/// Every read is checked against a shadow copy; at the end the whole image is compared with it (live, then
/// reopened from the file) and must pass the qcow2 check.
///
/// Who may touch what: the image is a shared read-only zone followed by one region per connection. A connection
/// writes, zeroes and trims only its own region, so it alone decides that region's content; it reads its own
/// region and the zone, which nobody changes during the run. Within a connection, the requests in flight never
/// overlap (shared-zone reads excepted), so every reply has one expected content; they do share clusters, which
/// is where the concurrency of allocation, COW from the backing file and L2 updates is exercised.
///
/// Runs <c>VDISK_NBD_SOAK_SECONDS</c> per configuration (default 6, for CI; 600 for the 10-minute run).
/// </summary>
public sealed class NbdSoakTests(ITestOutputHelper output) : IDisposable
{
    private const int Connections = 8, Depth = 64;
    private const long Region = 16 << 20;
    private const long Size = Region * (1 + Connections);  // the shared zone, then one region per connection
    private const long BackingSize = 96 << 20;              // under the zone and the first five regions
    private const int MaxIo = 256 << 10, MaxZero = 1 << 20;
    private const ulong FinalCookie = ulong.MaxValue;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "vdisk-soak-" + Guid.NewGuid().ToString("N")[..8]);

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    /// <summary>Seconds per soak run, from VDISK_NBD_SOAK_SECONDS or the CI default.</summary>
    public static int Seconds(int ciDefault)
    {
        var text = Environment.GetEnvironmentVariable("VDISK_NBD_SOAK_SECONDS");
        return int.TryParse(text, out int n) && n > 0 ? n : ciDefault;
    }

    private enum Kind { Read, ZoneRead, Write, WriteZeroes, Trim, BlockStatus, Flush }

    private sealed class Pending(Kind kind, long offset, int length, NbdCommandFlags flags)
    {
        public Kind Kind { get; } = kind;
        public long Offset { get; } = offset;
        public int Length { get; } = length;
        public NbdCommandFlags Flags { get; } = flags;
        public byte[]? Payload { get; init; }
        public byte[]? Got { get; set; }
        public List<(long Offset, long Length)> Chunks { get; } = new();
        public uint Error { get; set; }
        public List<(uint Length, NbdExtentFlags Flags)>? Extents { get; set; }
        public bool Ranged => Kind is not (Kind.Flush or Kind.ZoneRead);
    }

    private sealed class Stats
    {
        public readonly long[] Count = new long[7], Bytes = new long[7];
        public long Mismatches, Errors, HoleChunks, DataChunks, OutOfOrder, FuaRequests, NoHole, FastZeroRefused, ZeroPayloads, PinnedReads;
        private readonly List<string> _problems = new();
        public void Problem(string text)
        {
            lock (_problems) if (_problems.Count < 20) _problems.Add(text);
        }
        public string Problems { get { lock (_problems) return string.Join("\n", _problems); } }
    }

    [Theory]
    [InlineData("64k")]                          // the default layout
    [InlineData("16k-subclusters-tiny-caches")]  // extended L2 (512-byte subclusters), 2 L2 tables cached: metadata churn
    public async Task Eight_connections_with_64_in_flight_each_match_a_shadow_copy(string config)
    {
        Directory.CreateDirectory(_dir);
        int seconds = Seconds(6);
        int seed = Environment.TickCount;
        output.WriteLine($"config {config}, {seconds} s, seed {seed}");
        var shadow = new NbdSoakShadow(Size);
        string overlay = CreateImages(config, shadow, new Random(seed));
        var openOptions = new ImageOpenOptions
        {
            Cache = CacheMode.Writeback,
            Options = config == "64k" ? new Dictionary<string, string>()
                : new Dictionary<string, string> { ["l2-cache-size"] = "32768", ["refcount-cache-size"] = "32768" },
        };
        var image = DiskImages.Open(overlay, openOptions);
        var stats = new Stats();
        try
        {
            Compare(image, shadow, stats, "before the run");
            Assert.True(stats.Mismatches == 0, "the image differs from the shadow copy before the run:\n" + stats.Problems);

            string socket = Path.Combine(_dir, "s");
            var server = new NbdServer([new NbdExport("soak", image) { MultiConn = true, DiscardUnmap = true }],
                new NbdServerOptions { MaxClients = Connections, Persistent = true, Log = line => stats.Problem("server: " + line) });
            server.ListenUnix(socket);
            server.Start();
            var started = DateTime.UtcNow;
            var deadline = started + TimeSpan.FromSeconds(seconds);
            using var failed = new CancellationTokenSource();
            try
            {
                await Task.WhenAll(Enumerable.Range(0, Connections).Select(n =>
                    RunConnectionAsync(n, new UnixDomainSocketEndPoint(socket), shadow, stats, new Random(seed + 1 + n), deadline, failed)));
            }
            finally { await server.DisposeAsync(); }
            var elapsed = DateTime.UtcNow - started;

            Compare(image, shadow, stats, "live image after the run");
            image.Dispose();
            image = DiskImages.Open(overlay, openOptions);
            var check = image.Check();
            Compare(image, shadow, stats, "reopened image");
            Report(stats, elapsed, check);
            Assert.True(check.IsClean, $"check: {check.Corruptions} corruptions, {check.Leaks} leaks, {check.CheckErrors} errors\n" + string.Join("\n", check.Messages.Take(20)));
            Assert.True(stats.Mismatches == 0 && stats.Errors == 0, $"{stats.Mismatches} mismatches, {stats.Errors} errors (seed {seed}):\n" + stats.Problems);
        }
        finally { image.Dispose(); }
    }

    /// <summary>Creates the backing file and the overlay, with some data in both, and puts the same into the shadow copy.</summary>
    private string CreateImages(string config, NbdSoakShadow shadow, Random rng)
    {
        string backing = Path.Combine(_dir, "backing.qcow2"), overlay = Path.Combine(_dir, "overlay.qcow2");
        DiskImages.Create(backing, "qcow2", new ImageCreateOptions { Size = BackingSize });
        using (var b = DiskImages.Open(backing))
        {
            // About two thirds of each 256 KiB holds data, at odd offsets; the rest reads as zeros.
            for (long block = 0; block < BackingSize; block += 256 << 10)
            {
                if (rng.Next(3) == 0) continue;
                int length = rng.Next(1, 256 << 10);
                long at = block + rng.Next((256 << 10) - length + 1);
                var data = new byte[length];
                rng.NextBytes(data);
                b.Write(at, data.AsMemory());
                shadow.Write(at, data);
            }
        }
        var options = new Dictionary<string, string> { ["backing_file"] = "backing.qcow2", ["backing_fmt"] = "qcow2" };
        if (config != "64k")
        {
            options["cluster_size"] = "16384";
            options["extended_l2"] = "on";
        }
        DiskImages.Create(overlay, "qcow2", new ImageCreateOptions { Size = Size, Options = options });
        using (var o = DiskImages.Open(overlay))
        {
            // Some overlay data everywhere, partial clusters included, and a few zeroed ranges over the backing file.
            for (int i = 0; i < 400; i++)
            {
                int length = rng.Next(1, 128 << 10);
                long at = rng.NextInt64(Size - length);
                if (i % 8 == 0)
                {
                    o.WriteZeroes(at, length);
                    shadow.Zero(at, length);
                    continue;
                }
                var data = new byte[length];
                rng.NextBytes(data);
                o.Write(at, data.AsMemory());
                shadow.Write(at, data);
            }
        }
        return overlay;
    }

    private async Task RunConnectionAsync(int n, EndPoint endPoint, NbdSoakShadow shadow, Stats stats, Random rng, DateTime deadline, CancellationTokenSource failed)
    {
        bool structured = n % 2 == 0;
        await using var c = await NbdTestClient.ConnectAsync(endPoint);
        var (size, flags) = await c.NegotiateAsync("soak", structured, baseAllocation: structured);
        Assert.Equal(Size, size);
        Assert.True(flags.HasFlag(NbdTransmissionFlags.CanMultiConn));
        long lo = Region * (1 + n), hi = lo + Region;
        var gate = new object();
        var pending = new Dictionary<ulong, Pending>();
        using var slots = new SemaphoreSlim(Depth, Depth);
        var receiver = Task.Run(async () =>
        {
            try { await ReceiveAsync(c, structured, gate, pending, slots, shadow, stats, n); }
            catch
            {
                failed.Cancel();
                throw;
            }
        });
        try
        {
            ulong cookie = 0;
            while (DateTime.UtcNow < deadline)
            {
                await slots.WaitAsync(failed.Token);
                byte[] request;
                lock (gate)
                {
                    var p = Choose(rng, structured, lo, hi, pending.Values);
                    pending[++cookie] = p;
                    var command = p.Kind switch
                    {
                        Kind.Read or Kind.ZoneRead => NbdCommand.Read,
                        Kind.Write => NbdCommand.Write,
                        Kind.WriteZeroes => NbdCommand.WriteZeroes,
                        Kind.Trim => NbdCommand.Trim,
                        Kind.BlockStatus => NbdCommand.BlockStatus,
                        _ => NbdCommand.Flush,
                    };
                    request = NbdTestClient.Request(command, cookie, (ulong)p.Offset, (uint)p.Length, p.Flags, p.Payload);
                }
                await c.SendAsync(request);
            }
            // Everything answered, then one last FLUSH that the receiver stops at.
            for (int i = 0; i < Depth; i++) await slots.WaitAsync(failed.Token);
            lock (gate) pending[FinalCookie] = new Pending(Kind.Flush, 0, 0, 0);
            await c.SendRequestAsync(NbdCommand.Flush, FinalCookie, 0, 0);
            await receiver;
            await c.SendRequestAsync(NbdCommand.Disconnect, 0, 0, 0);
        }
        catch (Exception sending)
        {
            // Stop everyone; the receiver's complaint, if it has one, says more than a cancelled wait.
            failed.Cancel();
            await c.DisposeAsync();
            Exception? receiving = null;
            try { await receiver; }
            catch (Exception e) { receiving = e; }
            if (sending is OperationCanceledException && receiving is not null and not OperationCanceledException)
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(receiving);
            throw;
        }
    }

    /// <summary>The next request: a random kind and a range that overlaps nothing in flight on this connection.</summary>
    private static Pending Choose(Random rng, bool structured, long lo, long hi, IEnumerable<Pending> inFlight)
    {
        int roll = rng.Next(100);
        var kind = roll switch
        {
            < 30 => Kind.Read,
            < 40 => Kind.ZoneRead,
            < 68 => Kind.Write,
            < 80 => Kind.WriteZeroes,
            < 88 => Kind.Trim,
            < 96 => structured ? Kind.BlockStatus : Kind.Read,
            < 98 => Kind.Flush,
            _ => Kind.Write,
        };
        if (kind == Kind.Flush) return new Pending(Kind.Flush, 0, 0, rng.Next(4) == 0 ? NbdCommandFlags.Fua : 0);
        if (kind == Kind.ZoneRead)
        {
            var (zoneAt, zoneLength) = Range(rng, 0, Region, MaxIo);
            return new Pending(kind, zoneAt, zoneLength, structured && rng.Next(8) == 0 ? NbdCommandFlags.DontFragment : 0);
        }
        int max = kind is Kind.WriteZeroes or Kind.Trim or Kind.BlockStatus ? MaxZero : MaxIo;
        long at;
        int length;
        do (at, length) = Range(rng, lo, hi, max);
        while (inFlight.Any(p => p.Ranged && at < p.Offset + p.Length && p.Offset < at + length));
        var flags = (NbdCommandFlags)0;
        byte[]? payload = null;
        switch (kind)
        {
            case Kind.Read:
                if (structured && rng.Next(8) == 0) flags |= NbdCommandFlags.DontFragment;
                break;
            case Kind.Write:
                payload = new byte[length];
                if (rng.Next(30) != 0) rng.NextBytes(payload); // now and then all zeros
                if (rng.Next(10) == 0) flags |= NbdCommandFlags.Fua;
                break;
            case Kind.WriteZeroes:
                if (rng.Next(2) == 0) flags |= NbdCommandFlags.NoHole;
                if (rng.Next(10) == 0) flags |= NbdCommandFlags.Fua;
                if (rng.Next(8) == 0) flags |= NbdCommandFlags.FastZero;
                break;
            case Kind.Trim:
                if (rng.Next(10) == 0) flags |= NbdCommandFlags.Fua;
                break;
            case Kind.BlockStatus:
                if (rng.Next(4) == 0) flags |= NbdCommandFlags.ReqOne;
                break;
        }
        return new Pending(kind, at, length, flags) { Payload = payload };
    }

    /// <summary>A random range of [lo, hi): short ones more often than long ones; 4 KiB-aligned, 512-aligned, or anywhere.</summary>
    private static (long Offset, int Length) Range(Random rng, long lo, long hi, int max)
    {
        int limit = Math.Min(max, 512 << rng.Next(1 + (int)Math.Log2(max / 512)));
        int unit = rng.Next(4) switch { 0 or 1 => 4096, 2 => 512, _ => 1 };
        int length = unit == 1 ? rng.Next(512, limit + 1) : unit * rng.Next(1, Math.Max(1, limit / unit) + 1);
        long at = lo + unit * rng.NextInt64((hi - lo - length) / unit + 1);
        return (at, length);
    }

    private static async Task ReceiveAsync(NbdTestClient c, bool structured, object gate, Dictionary<ulong, Pending> pending,
        SemaphoreSlim slots, NbdSoakShadow shadow, Stats stats, int n)
    {
        ulong previous = 0;
        while (true)
        {
            var reply = await c.ReadReplyAsync(cookie =>
            {
                lock (gate) return pending.TryGetValue(cookie, out var q) && q.Kind is Kind.Read or Kind.ZoneRead ? q.Length : 0;
            });
            Pending? p;
            lock (gate) pending.TryGetValue(reply.Cookie, out p);
            if (p is null) throw new InvalidDataException($"connection {n}: reply for unknown cookie {reply.Cookie}");
            if (reply.Type is null && structured && p.Kind is Kind.Read or Kind.ZoneRead && reply.Error == 0)
                throw new InvalidDataException($"connection {n}: simple reply to a READ after structured replies were negotiated");
            if (reply.Cookie < previous) Interlocked.Increment(ref stats.OutOfOrder);
            previous = reply.Cookie;
            if (reply.ErrorCode != 0) p.Error = reply.ErrorCode;
            else if (p.Kind is Kind.Read or Kind.ZoneRead) TakeReadReply(p, reply, stats, n);
            else if (reply.Type == NbdReplyType.BlockStatus) p.Extents = ParseExtents(reply.Data!, n);
            if (!reply.Done) continue;
            lock (gate)
            {
                Complete(p, shadow, stats, n);
                pending.Remove(reply.Cookie);
            }
            if (reply.Cookie == FinalCookie) return;
            slots.Release();
        }
    }

    private static void TakeReadReply(Pending p, NbdTestReply reply, Stats stats, int n)
    {
        p.Got ??= new byte[p.Length];
        if (reply.Type is null)
        {
            reply.Data!.CopyTo(p.Got, 0);
            p.Chunks.Add((p.Offset, p.Length));
            return;
        }
        if (reply.Type is not (NbdReplyType.OffsetData or NbdReplyType.OffsetHole or NbdReplyType.None))
            throw new InvalidDataException($"connection {n}: unexpected {reply.Type} chunk in a READ reply");
        if (reply.Type == NbdReplyType.None) return;
        long at = BinaryPrimitives.ReadInt64BigEndian(reply.Data);
        long length = reply.Type == NbdReplyType.OffsetData ? reply.Data!.Length - 8 : BinaryPrimitives.ReadUInt32BigEndian(reply.Data.AsSpan(8));
        if (at < p.Offset || at + length > p.Offset + p.Length || length == 0)
            throw new InvalidDataException($"connection {n}: chunk {at}+{length} outside the READ {p.Offset}+{p.Length}");
        if (p.Chunks.Any(ch => at < ch.Offset + ch.Length && ch.Offset < at + length))
            throw new InvalidDataException($"connection {n}: overlapping chunks in the READ {p.Offset}+{p.Length}");
        p.Chunks.Add((at, length));
        Interlocked.Increment(ref reply.Type == NbdReplyType.OffsetData ? ref stats.DataChunks : ref stats.HoleChunks);
        NbdTestClient.ApplyReadChunk(reply, p.Offset, p.Got);
    }

    private static List<(uint, NbdExtentFlags)> ParseExtents(byte[] data, int n)
    {
        if (data.Length < 12 || (data.Length - 4) % 8 != 0) throw new InvalidDataException($"connection {n}: BLOCK_STATUS chunk of {data.Length} bytes");
        return Enumerable.Range(0, (data.Length - 4) / 8)
            .Select(i => (BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(4 + 8 * i)), (NbdExtentFlags)BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(8 + 8 * i))))
            .ToList();
    }

    /// <summary>A request fully answered: check what it returned, or apply what it did to the shadow copy. Under the connection's lock.</summary>
    private static void Complete(Pending p, NbdSoakShadow shadow, Stats stats, int n)
    {
        int k = (int)p.Kind;
        Interlocked.Increment(ref stats.Count[k]);
        Interlocked.Add(ref stats.Bytes[k], p.Length);
        if (p.Flags.HasFlag(NbdCommandFlags.Fua)) Interlocked.Increment(ref stats.FuaRequests);
        string what = $"connection {n}: {p.Kind} {p.Offset}+{p.Length} flags {p.Flags}";
        if (p.Error != 0)
        {
            // FAST_ZERO may be refused when zeroing would write data; the range is then untouched.
            if (p.Kind == Kind.WriteZeroes && p.Flags.HasFlag(NbdCommandFlags.FastZero) && p.Error == (uint)NbdError.NotSup)
            {
                Interlocked.Increment(ref stats.FastZeroRefused);
                return;
            }
            Interlocked.Increment(ref stats.Errors);
            stats.Problem($"{what}: error {p.Error}");
            return;
        }
        switch (p.Kind)
        {
            case Kind.Read or Kind.ZoneRead:
                long covered = p.Chunks.Sum(ch => ch.Length);
                if (covered != p.Length)
                {
                    Interlocked.Increment(ref stats.Errors);
                    stats.Problem($"{what}: chunks cover {covered} bytes");
                }
                if (p.Flags.HasFlag(NbdCommandFlags.DontFragment) && p.Chunks.Count != 1)
                {
                    Interlocked.Increment(ref stats.Errors);
                    stats.Problem($"{what}: {p.Chunks.Count} chunks despite DF");
                }
                if (p.Kind == Kind.Read && shadow.TrimmedBytes(p.Offset, p.Length) > 0) Interlocked.Increment(ref stats.PinnedReads);
                var (wrong, first) = shadow.Verify(p.Offset, p.Got, pin: p.Kind == Kind.Read);
                if (wrong > 0)
                {
                    Interlocked.Add(ref stats.Mismatches, wrong);
                    stats.Problem($"{what}: {wrong} bytes differ, first at {first}");
                }
                break;
            case Kind.Write:
                shadow.Write(p.Offset, p.Payload);
                if (!p.Payload!.AsSpan().ContainsAnyExcept((byte)0)) Interlocked.Increment(ref stats.ZeroPayloads);
                break;
            case Kind.WriteZeroes:
                shadow.Zero(p.Offset, p.Length);
                if (p.Flags.HasFlag(NbdCommandFlags.NoHole)) Interlocked.Increment(ref stats.NoHole);
                break;
            case Kind.Trim:
                shadow.Trim(p.Offset, p.Length);
                break;
            case Kind.BlockStatus:
                if (p.Extents is not { Count: > 0 } extents || (p.Flags.HasFlag(NbdCommandFlags.ReqOne) && extents.Count != 1) || extents.Any(e => e.Item1 == 0))
                {
                    Interlocked.Increment(ref stats.Errors);
                    stats.Problem($"{what}: extents {string.Join(",", p.Extents ?? [])}");
                    break;
                }
                long at = p.Offset, end = p.Offset + p.Length;
                foreach (var (length, flags) in extents)
                {
                    if (at >= end) break;
                    long upTo = Math.Min(end, at + length);
                    if (flags.HasFlag(NbdExtentFlags.Zero))
                    {
                        var (bad, firstBad) = shadow.VerifyZero(at, upTo - at);
                        if (bad > 0)
                        {
                            Interlocked.Add(ref stats.Mismatches, bad);
                            stats.Problem($"{what}: extent {at}+{upTo - at} said zero, {bad} bytes are not, first at {firstBad}");
                        }
                    }
                    at = upTo;
                }
                break;
        }
    }

    /// <summary>The whole image against the shadow copy (bytes trimmed and never read since may be old or zero).</summary>
    private static void Compare(DiskImage image, NbdSoakShadow shadow, Stats stats, string when)
    {
        var buffer = new byte[4 << 20];
        for (long at = 0; at < Size; at += buffer.Length)
        {
            image.Read(at, buffer.AsMemory());
            var (wrong, first) = shadow.Verify(at, buffer, pin: false);
            if (wrong > 0)
            {
                Interlocked.Add(ref stats.Mismatches, wrong);
                stats.Problem($"{when}: {wrong} bytes differ in {at}+{buffer.Length}, first at {first}");
            }
        }
    }

    private void Report(Stats stats, TimeSpan elapsed, ImageCheckResult check)
    {
        long total = stats.Count.Sum();
        output.WriteLine($"{total} requests in {elapsed.TotalSeconds:F1} s ({total / elapsed.TotalSeconds:F0}/s), {Connections} connections x {Depth} in flight");
        foreach (Kind kind in Enum.GetValues<Kind>())
            output.WriteLine($"  {kind,-12} {stats.Count[(int)kind],10} requests {stats.Bytes[(int)kind] / (1 << 20),8} MiB");
        output.WriteLine($"  FUA {stats.FuaRequests}, write-zeroes with NO_HOLE {stats.NoHole}, FAST_ZERO refused {stats.FastZeroRefused}, all-zero writes {stats.ZeroPayloads}");
        output.WriteLine($"  structured READ chunks: {stats.DataChunks} data, {stats.HoleChunks} hole; reads of trimmed bytes {stats.PinnedReads}; replies out of order {stats.OutOfOrder}");
        output.WriteLine($"  mismatches {stats.Mismatches}, errors {stats.Errors}; check: {check.Corruptions} corruptions, {check.Leaks} leaks, " +
                         $"{check.AllocatedClusters}/{check.TotalClusters} clusters allocated, {check.FragmentedClusters} fragmented");
        if (stats.Problems.Length > 0) output.WriteLine(stats.Problems);
    }
}
