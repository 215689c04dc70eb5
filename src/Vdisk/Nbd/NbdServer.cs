using System.Net;
using System.Net.Sockets;

namespace Vdisk.Nbd;

/// <summary>
/// Serves exports on TCP and unix-socket listeners. Each client gets its own negotiation and request loop; a client
/// that breaks the protocol, stalls in the handshake or vanishes is dropped without disturbing the others. At most
/// <see cref="NbdServerOptions.MaxClients"/> are served at once: while that many are connected nothing more is
/// accepted, as with qemu-nbd's -e.
/// </summary>
public sealed class NbdServer : IAsyncDisposable
{
    private readonly Dictionary<string, NbdExport> _exports;
    private readonly NbdServerOptions _options;
    private readonly List<Socket> _listeners = new();
    private readonly List<string> _socketFiles = new();
    private readonly SemaphoreSlim _clientSlots;
    private readonly CancellationTokenSource _stopping = new();
    private readonly TaskCompletionSource _finished = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Lock _gate = new();
    private readonly HashSet<NbdServerClient> _clients = new();
    private readonly List<Task> _acceptLoops = new();
    private readonly NbdByteBudget _bytes;
    private readonly NbdBufferPool _buffers;
    private bool _everServed;
    private int _stopRequested;

    public NbdServer(IEnumerable<NbdExport> exports, NbdServerOptions? options = null)
    {
        _exports = exports.ToDictionary(e => e.Name, StringComparer.Ordinal);
        _options = options ?? new NbdServerOptions();
        _clientSlots = new SemaphoreSlim(Math.Max(1, _options.MaxClients));
        long total = Math.Max(NbdProtocol.MaxPayload, _options.MaxTotalBytesInFlight);
        _bytes = new NbdByteBudget(total);
        _buffers = new NbdBufferPool(total, BufferIdleTrim);
    }

    /// <summary>Large buffers kept for reuse are unmapped after this long without a large request.</summary>
    private static readonly TimeSpan BufferIdleTrim = TimeSpan.FromSeconds(5);

    /// <summary>Completes when the server has stopped: on <see cref="StopAsync"/>, or after the last client left when not persistent.</summary>
    public Task Completion => _finished.Task;

    /// <summary>Clients connected right now.</summary>
    public int ClientCount { get { lock (_gate) return _clients.Count; } }

    /// <summary>What the server holds for requests right now, across all its connections.</summary>
    public NbdMemoryUsage Memory => new(_buffers.RentedBytes, _buffers.KeptBytes,
        (long)(_bytes.Capacity - _bytes.Available) * NbdByteBudget.UnitSize);

    /// <summary>Binds a TCP listener (port 0 picks a free port) and returns the address it got.</summary>
    public IPEndPoint ListenTcp(IPEndPoint endPoint)
    {
        var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            socket.Bind(endPoint);
            socket.Listen(128);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        _listeners.Add(socket);
        return (IPEndPoint)socket.LocalEndPoint!;
    }

    /// <summary>Binds a unix-domain socket at <paramref name="path"/>; the file is removed when the server stops.</summary>
    public void ListenUnix(string path)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Bind(new UnixDomainSocketEndPoint(path));
            socket.Listen(128);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        _listeners.Add(socket);
        _socketFiles.Add(path);
    }

    /// <summary>Starts accepting on every listener.</summary>
    public void Start()
    {
        if (_listeners.Count == 0) throw new InvalidOperationException("No listener: call ListenTcp or ListenUnix first");
        foreach (var listener in _listeners) _acceptLoops.Add(AcceptLoopAsync(listener));
    }

    private async Task AcceptLoopAsync(Socket listener)
    {
        var ct = _stopping.Token;
        while (!ct.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                await _clientSlots.WaitAsync(ct).ConfigureAwait(false);
                try { socket = await listener.AcceptAsync(ct).ConfigureAwait(false); }
                catch
                {
                    _clientSlots.Release();
                    throw;
                }
            }
            catch (OperationCanceledException) { return; }
            catch (SocketException e) when (!ct.IsCancellationRequested)
            {
                // ECONNABORTED and friends concern one would-be client, not the listener.
                _options.Log?.Invoke($"Accept failed: {e.Message}");
                continue;
            }
            catch (ObjectDisposedException) { return; }
            if (socket.ProtocolType == ProtocolType.Tcp) socket.NoDelay = true;
            var client = new NbdServerClient(socket);
            lock (_gate)
            {
                _clients.Add(client);
                _everServed = true;
            }
            _ = ServeAsync(client);
        }
    }

    private async Task ServeAsync(NbdServerClient client)
    {
        await Task.Yield(); // leave the accept loop at once
        try
        {
            await client.RunAsync(_exports, _options, _bytes, _buffers, _stopping.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or SocketException or NbdProtocolException or OperationCanceledException or ObjectDisposedException
                                   or System.Security.Authentication.AuthenticationException)
        {
            _options.Log?.Invoke($"Disconnect client, due to: {e.Message}");
        }
        catch (Exception e)
        {
            _options.Log?.Invoke($"Disconnect client, due to internal error: {e}");
        }
        finally
        {
            client.Socket.Dispose();
            bool last;
            lock (_gate)
            {
                _clients.Remove(client);
                last = _clients.Count == 0;
            }
            _clientSlots.Release();
            client.Finished();
            if (last) LastClientLeft();
            if (last && !_options.Persistent && _everServed) _ = StopAsync();
        }
    }

    /// <summary>Nobody is left to reuse the large buffers: their memory goes back now. Then the host's Idle hook.</summary>
    private void LastClientLeft()
    {
        _buffers.Trim();
        try { _options.Idle?.Invoke(); }
        catch (Exception e) { _options.Log?.Invoke($"Idle hook failed: {e}"); }
    }

    /// <summary>
    /// Stops accepting, lets every client's requests in flight finish and reply, then closes. Clients whose replies
    /// cannot be delivered within <paramref name="grace"/> are cut off.
    /// </summary>
    public async Task StopAsync(TimeSpan? grace = null)
    {
        if (Interlocked.Exchange(ref _stopRequested, 1) != 0)
        {
            await _finished.Task.ConfigureAwait(false);
            return;
        }
        _stopping.Cancel();
        foreach (var l in _listeners) l.Dispose();
        foreach (var f in _socketFiles)
        {
            try { File.Delete(f); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
        NbdServerClient[] clients;
        lock (_gate) clients = _clients.ToArray();
        var all = Task.WhenAll(clients.Select(c => c.Done).Concat(_acceptLoops));
        if (await Task.WhenAny(all, Task.Delay(grace ?? TimeSpan.FromSeconds(10))).ConfigureAwait(false) != all)
        {
            foreach (var c in clients) c.Abort();
            await all.ConfigureAwait(false);
        }
        _finished.TrySetResult();
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync().ConfigureAwait(false);
        _stopping.Dispose();
        _clientSlots.Dispose();
        _buffers.Dispose();
    }
}

/// <param name="BuffersRented">Bytes of request and reply buffers in use.</param>
/// <param name="BuffersKept">Bytes of large buffers kept for reuse.</param>
/// <param name="BytesInFlight">The server-wide budget taken by requests not yet replied to.</param>
public readonly record struct NbdMemoryUsage(long BuffersRented, long BuffersKept, long BytesInFlight);
