using System.Net.Sockets;
using Vdisk.BlockIO;
using Vdisk.Formats.Raw;
using Vdisk.Nbd;
using Xunit;

namespace Vdisk.Tests.Nbd;

/// <summary>
/// The server in-process on a unix socket, with a raw image in a temporary file, driven by the raw test client. A
/// file, not memory: the server runs each request until its first wait, so only I/O that really waits (as file
/// I/O does) lets replies overtake each other.
/// </summary>
public abstract class NbdServerFixture : IAsyncLifetime
{
    protected readonly string _dir = Path.Combine(Path.GetTempPath(), "vdisk-nbd-" + Guid.NewGuid().ToString("N")[..8]);
    protected readonly RawImage _image;
    protected readonly List<string> _log = new();
    protected NbdServer _server = null!;
    protected UnixDomainSocketEndPoint _endPoint = null!;

    /// <param name="size">The image's size; it is sparse, so a large one costs nothing.</param>
    protected NbdServerFixture(long size)
    {
        Directory.CreateDirectory(_dir);
        var file = FileBlockDevice.Create(Path.Combine(_dir, "image.raw"));
        file.SetLength(size);
        _image = new RawImage(file, readOnly: false);
    }

    public abstract Task InitializeAsync();

    /// <summary>Serves the image as "exp" (multi-conn, TRIM discards) on a fresh socket; the server's log goes to <see cref="_log"/>.</summary>
    protected Task StartAsync(NbdServerOptions options)
    {
        Directory.CreateDirectory(_dir);
        string path = Path.Combine(_dir, "s" + Guid.NewGuid().ToString("N")[..6]);
        _server = new NbdServer([new NbdExport("exp", _image) { MultiConn = true, DiscardUnmap = true }],
            options with { Log = line => { lock (_log) _log.Add(line); } });
        _server.ListenUnix(path);
        _server.Start();
        _endPoint = new UnixDomainSocketEndPoint(path);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        if (_server is not null) await _server.DisposeAsync();
        _image.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    protected async Task<NbdTestClient> Connected(bool structured = true)
    {
        var c = await NbdTestClient.ConnectAsync(_endPoint);
        await c.NegotiateAsync("exp", structured, structured);
        return c;
    }
}
