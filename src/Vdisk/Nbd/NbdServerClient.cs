using System.Net.Sockets;

namespace Vdisk.Nbd;

/// <summary>One accepted socket: its negotiation (bounded in time) and then its request loop.</summary>
internal sealed class NbdServerClient(Socket socket)
{
    private readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile NbdConnection? _connection;

    public Socket Socket { get; } = socket;
    /// <summary>Completes when the client is gone and its socket closed.</summary>
    public Task Done => _done.Task;

    public void Finished() => _done.TrySetResult();

    public async Task RunAsync(IReadOnlyDictionary<string, NbdExport> exports, NbdServerOptions options, CancellationToken stopping)
    {
        await using var stream = new NetworkStream(Socket, ownsSocket: true);
        // Reads and writes are buffered separately: one reader loop and the reply lock never share a buffer.
        var input = new BufferedStream(stream, 64 << 10);
        using var output = new NbdReplyWriter(stream);
        NbdSession? session;
        using (var deadline = CancellationTokenSource.CreateLinkedTokenSource(stopping))
        {
            deadline.CancelAfter(options.HandshakeTimeout);
            try
            {
                session = await NbdHandshake.NegotiateAsync(input, output, exports, deadline.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!stopping.IsCancellationRequested)
            {
                throw new NbdProtocolException($"Client did not finish the handshake within {options.HandshakeTimeout.TotalSeconds:0.#} s");
            }
        }
        if (session is null) return;
        using var connection = new NbdConnection(input, output, session, options);
        _connection = connection;
        await connection.RunAsync(stopping).ConfigureAwait(false);
    }

    /// <summary>Cuts the client off: replies stop and the socket is shut down, which ends its reads.</summary>
    public void Abort()
    {
        _connection?.Abort();
        try { Socket.Shutdown(SocketShutdown.Both); }
        catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
    }
}
