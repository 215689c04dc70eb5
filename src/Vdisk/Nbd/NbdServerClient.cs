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

    public async Task RunAsync(IReadOnlyDictionary<string, NbdExport> exports, NbdServerOptions options, NbdByteBudget serverBytes,
        NbdBufferPool buffers, CancellationToken stopping)
    {
        var stream = new NetworkStream(Socket, ownsSocket: true);
        var handshake = new NbdHandshake(stream, new NbdReplyWriter(stream), exports, options.Tls);
        try
        {
            NbdSession? session;
            using (var deadline = CancellationTokenSource.CreateLinkedTokenSource(stopping))
            {
                deadline.CancelAfter(options.HandshakeTimeout);
                try
                {
                    session = await handshake.RunAsync(deadline.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (!stopping.IsCancellationRequested)
                {
                    throw new NbdProtocolException($"Client did not finish the handshake within {options.HandshakeTimeout.TotalSeconds:0.#} s");
                }
            }
            if (session is null) return;
            // Buffered only now: the handshake must not read ahead of STARTTLS (see NbdHandshake).
            var input = new BufferedStream(handshake.Transport, 64 << 10);
            using var connection = new NbdConnection(input, handshake.Output, session, options, serverBytes, buffers);
            _connection = connection;
            await connection.RunAsync(stopping).ConfigureAwait(false);
        }
        finally
        {
            handshake.Output.Dispose();
            await handshake.Transport.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Cuts the client off: replies stop and the socket is shut down, which ends its reads.</summary>
    public void Abort()
    {
        _connection?.Abort();
        try { Socket.Shutdown(SocketShutdown.Both); }
        catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
    }
}
