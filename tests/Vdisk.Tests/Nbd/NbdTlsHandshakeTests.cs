using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Vdisk.BlockIO;
using Vdisk.Formats.Raw;
using Vdisk.Nbd;
using Xunit;
using static Vdisk.Tests.Nbd.NbdTestClient;

namespace Vdisk.Tests.Nbd;

/// <summary>FORCEDTLS negotiation, byte by byte, against the server in-process with a throwaway self-signed certificate.</summary>
public sealed class NbdTlsHandshakeTests : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "vdisk-nbdtls-" + Guid.NewGuid().ToString("N")[..8]);
    private readonly RawImage _image = new(new MemoryBlockDevice(1 << 20), readOnly: false);
    private readonly List<string> _log = new();
    private NbdServer _server = null!;
    private UnixDomainSocketEndPoint _endPoint = null!;

    private static X509Certificate2 SelfSigned()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256);
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
    }

    public Task InitializeAsync() => StartAsync(new NbdTls(SelfSigned()));

    private Task StartAsync(NbdTls? tls)
    {
        Directory.CreateDirectory(_dir);
        string path = Path.Combine(_dir, "s" + Guid.NewGuid().ToString("N")[..6]);
        _server = new NbdServer([new NbdExport("exp", _image)],
            new NbdServerOptions { MaxClients = 8, Persistent = true, Tls = tls, Log = line => { lock (_log) _log.Add(line); } });
        _server.ListenUnix(path);
        _server.Start();
        _endPoint = new UnixDomainSocketEndPoint(path);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _server.DisposeAsync();
        _image.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private async Task<NbdTestClient> GreetedAsync()
    {
        var c = await ConnectAsync(_endPoint);
        Assert.Equal(3, (await c.ReceiveAsync(18))[17]); // FIXED_NEWSTYLE | NO_ZEROES, as without TLS
        await c.SendAsync(ClientFlags(3));
        return c;
    }

    [Fact]
    public async Task Options_before_starttls_are_refused_and_go_works_after_it()
    {
        await using var c = await GreetedAsync();
        foreach (var (option, data) in new[] { (NbdOption.Go, InfoPayload("exp")), (NbdOption.List, []), (NbdOption.StructuredReply, []),
                     (NbdOption.Info, InfoPayload("nope")), ((NbdOption)0x7654321, new byte[] { 1 }) })
        {
            await c.SendAsync(Option(option, data));
            var reply = await c.ReadOptionReplyAsync();
            Assert.Equal((option, NbdOptionReply.ErrTlsReqd), (reply.Option, reply.Type));
        }
        await c.SendAsync(Option(NbdOption.StartTls, []));
        Assert.Equal(NbdOptionReply.Ack, (await c.ReadOptionReplyAsync()).Type);
        await c.UpgradeToTlsAsync();
        await c.SendAsync(Option(NbdOption.StartTls, []));
        Assert.Equal(NbdOptionReply.ErrInvalid, (await c.ReadOptionReplyAsync()).Type);
        var (size, _) = await c.NegotiateAfterGreetingAsync("exp");
        Assert.Equal(1 << 20, size);
        var payload = Enumerable.Range(0, 4096).Select(i => (byte)i).ToArray();
        await c.SendRequestAsync(NbdCommand.Write, 7, 4096, 4096, payload: payload);
        Assert.Equal(0u, (await c.ReadReplyAsync()).ErrorCode);
        await c.SendRequestAsync(NbdCommand.Read, 8, 4096, 4096);
        var read = await c.ReadReplyAsync();
        Assert.Equal(8ul, read.Cookie);
        var back = new byte[4096];
        ApplyReadChunk(read, 4096, back);
        Assert.Equal(payload, back);
    }

    [Fact]
    public async Task Export_name_before_tls_ends_the_connection()
    {
        await using var c = await GreetedAsync();
        await c.SendAsync(Option(NbdOption.ExportName, "exp"u8.ToArray()));
        Assert.True(await c.ClosedWithinAsync(TimeSpan.FromSeconds(10)));
        await Task.Delay(200);
        lock (_log) Assert.Contains(_log, l => l.Contains("not permitted before TLS", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Abort_before_tls_is_acked()
    {
        await using var c = await GreetedAsync();
        await c.SendAsync(Option(NbdOption.Abort, []));
        var reply = await c.ReadOptionReplyAsync();
        Assert.Equal((NbdOption.Abort, NbdOptionReply.Ack), (reply.Option, reply.Type));
        Assert.True(await c.ClosedWithinAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task Plaintext_sent_after_starttls_never_reaches_the_handshake()
    {
        await using var c = await GreetedAsync();
        // STARTTLS with an injected GO right behind it: the server must not answer the GO in plaintext.
        await c.SendAsync([.. Option(NbdOption.StartTls, []), .. Option(NbdOption.Go, InfoPayload("exp"))]);
        Assert.Equal(NbdOptionReply.Ack, (await c.ReadOptionReplyAsync()).Type);
        Assert.True(await c.ClosedWithinAsync(TimeSpan.FromSeconds(10)));
        await Task.Delay(200);
        lock (_log) Assert.Contains(_log, l => l.StartsWith("Disconnect client", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Starttls_to_a_plaintext_server_is_refused_by_policy()
    {
        await _server.DisposeAsync();
        await StartAsync(null);
        await using var c = await GreetedAsync();
        await c.SendAsync(Option(NbdOption.StartTls, []));
        Assert.Equal(NbdOptionReply.ErrPolicy, (await c.ReadOptionReplyAsync()).Type);
        var (size, _) = await c.NegotiateAfterGreetingAsync("exp");
        Assert.Equal(1 << 20, size);
    }
}
