namespace Vdisk.Nbd;

/// <summary>
/// The transmission phase of one client: a single reader loop takes requests off the wire and starts each one at
/// once, so many run concurrently and their replies go out in the order they finish. Two budgets bound what one
/// client can make the server hold: requests in flight and bytes in flight (payloads, and replies until they have
/// been sent: a client that does not read its replies stops the server reading its requests). A third, shared by
/// every connection, bounds the server. When any is spent, the reader stops reading and TCP pushes back.
/// </summary>
public sealed partial class NbdConnection : IDisposable
{
    private readonly Stream _in;
    private readonly NbdReplyWriter _out;
    private readonly NbdSession _session;
    private readonly NbdServerOptions _options;
    private readonly SemaphoreSlim _slots;
    private readonly NbdByteBudget _bytes, _serverBytes;
    private readonly NbdBufferPool _buffers;
    private readonly int _slotCount;
    // Cancelled when replies can no longer be delivered, or the server gives up waiting: stops reading and sending.
    private readonly CancellationTokenSource _abort = new();
    private int _wrote;

    internal NbdConnection(Stream input, NbdReplyWriter output, NbdSession session, NbdServerOptions options,
        NbdByteBudget serverBytes, NbdBufferPool buffers)
    {
        _in = input;
        _out = output;
        _session = session;
        _options = options;
        _slotCount = Math.Max(1, options.MaxRequestsInFlight);
        _slots = new SemaphoreSlim(_slotCount, _slotCount);
        _bytes = new NbdByteBudget(Math.Max(NbdProtocol.MaxPayload, options.MaxBytesInFlight));
        _serverBytes = serverBytes;
        _buffers = buffers;
    }

    private NbdExport Export => _session.Export;

    /// <summary>Ends the connection without waiting for replies to be read (the server's last resort at shutdown).</summary>
    public void Abort()
    {
        try { _abort.Cancel(); }
        catch (ObjectDisposedException) { } // already finished
    }

    /// <summary>
    /// Serves requests until the client disconnects or <paramref name="stopping"/> fires; then lets the requests in
    /// flight finish and reply. Throws <see cref="NbdProtocolException"/> when the client broke the protocol.
    /// </summary>
    public async Task RunAsync(CancellationToken stopping)
    {
        using var reading = CancellationTokenSource.CreateLinkedTokenSource(stopping, _abort.Token);
        try
        {
            await ReadLoopAsync(reading.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (reading.IsCancellationRequested)
        {
            // Stopping, or replies stopped flowing: nothing more to read.
        }
        finally
        {
            await DrainAsync().ConfigureAwait(false);
        }
        // A client that wrote and leaves without FLUSH still finds its data safe if the server dies afterwards.
        if (Volatile.Read(ref _wrote) != 0 && !Export.IsReadOnly)
        {
            try { await Export.Image.FlushAsync(CancellationToken.None).ConfigureAwait(false); }
            catch (Exception e) when (e is IOException or ObjectDisposedException) { _options.Log?.Invoke($"Flush at disconnect failed: {e.Message}"); }
        }
    }

    private async Task ReadLoopAsync(CancellationToken ct)
    {
        var header = new byte[NbdRequest.Size];
        while (true)
        {
            int got = await _in.ReadAtLeastAsync(header, header.Length, throwOnEndOfStream: false, ct).ConfigureAwait(false);
            if (got == 0) return; // the client went away between requests
            if (got < header.Length) throw new NbdProtocolException("Truncated request header");
            var request = NbdRequest.Parse(header);
            if (request.Magic != NbdProtocol.RequestMagic)
            {
                // qemu-nbd answers EINVAL before hanging up; the framing is lost, so nothing after it can be trusted.
                await ReplyErrorAsync(request, NbdError.Inval, "Bad request magic").ConfigureAwait(false);
                throw new NbdProtocolException($"Bad request magic 0x{request.Magic:x8}");
            }
            if (request.Command == NbdCommand.Disconnect) return;
            if (request.Command == NbdCommand.Write && request.Length > NbdProtocol.MaxPayload)
            {
                // The payload is not read (it could be 4 GiB), so the stream cannot be resynchronised: hang up.
                await ReplyErrorAsync(request, NbdError.Inval, $"len ({request.Length}) is larger than max len ({NbdProtocol.MaxPayload})").ConfigureAwait(false);
                throw new NbdProtocolException("Write payload larger than the maximum");
            }
            await StartAsync(request, ct).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Takes the budgets, reads a WRITE's payload, and starts the request. It runs on this thread until its first
    /// wait (the image's I/O), then the reader moves on: no extra hop through the thread pool per request.
    /// </summary>
    private async Task StartAsync(NbdRequest request, CancellationToken ct)
    {
        int units = UnitsFor(request);
        await _slots.WaitAsync(ct).ConfigureAwait(false);
        int taken = 0, takenFromServer = 0;
        NbdBuffer? payload = null;
        try
        {
            await _bytes.TakeAsync(units, ct).ConfigureAwait(false);
            taken = units;
            await _serverBytes.TakeAsync(units, ct).ConfigureAwait(false);
            takenFromServer = units;
            if (request.Command == NbdCommand.Write)
            {
                payload = _buffers.Rent((int)request.Length);
                await _in.ReadExactlyAsync(payload.Value.Memory, ct).ConfigureAwait(false);
                Interlocked.Exchange(ref _wrote, 1);
            }
        }
        catch
        {
            if (payload is { } p) _buffers.Return(p);
            _serverBytes.Release(takenFromServer);
            _bytes.Release(taken);
            _slots.Release();
            throw;
        }
        _ = RunRequestAsync(request, payload, units);
    }

    /// <summary>
    /// What a request may hold until its reply is sent, in budget units: its payload or its data, the largest
    /// BLOCK_STATUS reply, CACHE's scratch buffer. Other replies are a few bytes (an error message at most 4 KiB),
    /// bounded by the count of requests in flight.
    /// </summary>
    private int UnitsFor(NbdRequest r) => r.Command switch
    {
        NbdCommand.Read or NbdCommand.Write => _bytes.UnitsFor(Math.Min(r.Length, NbdProtocol.MaxPayload)),
        NbdCommand.BlockStatus => _bytes.UnitsFor(BlockStatusReplyMax),
        NbdCommand.Cache => _bytes.UnitsFor(Math.Min(r.Length, PrefetchChunk)),
        _ => 0,
    };

    /// <summary>Runs the request against the image and replies; image failures become NBD errors, never disconnects.</summary>
    private async Task RunRequestAsync(NbdRequest request, NbdBuffer? payload, int units)
    {
        ReplyPieces? reply = null;
        try
        {
            var (error, message) = Validate(request);
            if (error == NbdError.None)
            {
                try { reply = await PerformAsync(request, payload).ConfigureAwait(false); }
                catch (Exception e) when (e is not OperationCanceledException) { (error, message) = Failure(request, e); }
            }
            if (payload is { } written)
            {
                // The write is done (or failed) and its reply needs none of its data: give the payload back now, so
                // that a client that does not read its replies holds a few bytes per request, not its payloads.
                payload = null;
                _buffers.Return(written);
                ReleaseBytes(units);
                units = 0;
            }
            await ReplyAsync(request, error, message, reply).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException)
        {
            // A reply could not be sent: the client is gone. Stop the reader too instead of serving a dead socket.
            _abort.Cancel();
        }
        catch (Exception e)
        {
            _options.Log?.Invoke($"Internal error serving a request: {e}");
            _abort.Cancel();
        }
        finally
        {
            reply?.Dispose();
            if (payload is { } p) _buffers.Return(p);
            ReleaseBytes(units);
            _slots.Release();
        }
    }

    private void ReleaseBytes(int units)
    {
        _serverBytes.Release(units);
        _bytes.Release(units);
    }

    /// <summary>Waits until every request in flight has replied (or failed to): all slots are back.</summary>
    private async Task DrainAsync()
    {
        for (int i = 0; i < _slotCount; i++) await _slots.WaitAsync().ConfigureAwait(false);
        _slots.Release(_slotCount);
    }

    public void Dispose()
    {
        _abort.Dispose();
        _slots.Dispose();
    }
}
