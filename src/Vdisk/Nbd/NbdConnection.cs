using System.Buffers;

namespace Vdisk.Nbd;

/// <summary>
/// The transmission phase of one client: a single reader loop takes requests off the wire and starts each one at
/// once, so many run concurrently and their replies go out in the order they finish. Two budgets bound what one
/// client can make the server hold: requests in flight and payload bytes in flight. When either is spent, the
/// reader stops reading and TCP pushes back on the client.
/// </summary>
public sealed partial class NbdConnection : IDisposable
{
    private const int BudgetUnit = 64 << 10;

    private readonly Stream _in;
    private readonly NbdReplyWriter _out;
    private readonly NbdSession _session;
    private readonly NbdServerOptions _options;
    private readonly SemaphoreSlim _slots, _bytes;
    private readonly int _slotCount;
    // Cancelled when replies can no longer be delivered, or the server gives up waiting: stops reading and sending.
    private readonly CancellationTokenSource _abort = new();
    private int _wrote;

    public NbdConnection(Stream input, NbdReplyWriter output, NbdSession session, NbdServerOptions options)
    {
        _in = input;
        _out = output;
        _session = session;
        _options = options;
        _slotCount = Math.Max(1, options.MaxRequestsInFlight);
        _slots = new SemaphoreSlim(_slotCount, _slotCount);
        int units = Math.Max(NbdProtocol.MaxPayload, options.MaxBytesInFlight) / BudgetUnit;
        _bytes = new SemaphoreSlim(units, units);
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
        int units = request.Command is NbdCommand.Read or NbdCommand.Write
            ? (int)Math.Min((request.Length + (long)BudgetUnit - 1) / BudgetUnit, NbdProtocol.MaxPayload / BudgetUnit)
            : 0;
        await _slots.WaitAsync(ct).ConfigureAwait(false);
        int taken = 0;
        byte[]? payload = null;
        try
        {
            // Only this loop takes from the byte budget, so taking it unit by unit cannot deadlock.
            for (; taken < units; taken++) await _bytes.WaitAsync(ct).ConfigureAwait(false);
            if (request.Command == NbdCommand.Write)
            {
                payload = ArrayPool<byte>.Shared.Rent((int)request.Length);
                await _in.ReadExactlyAsync(payload.AsMemory(0, (int)request.Length), ct).ConfigureAwait(false);
                Interlocked.Exchange(ref _wrote, 1);
            }
        }
        catch
        {
            if (payload is not null) ArrayPool<byte>.Shared.Return(payload);
            if (taken > 0) _bytes.Release(taken);
            _slots.Release();
            throw;
        }
        _ = RunRequestAsync(request, payload, units);
    }

    private async Task RunRequestAsync(NbdRequest request, byte[]? payload, int units)
    {
        try
        {
            await ExecuteAsync(request, payload).ConfigureAwait(false);
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
            if (payload is not null) ArrayPool<byte>.Shared.Return(payload);
            if (units > 0) _bytes.Release(units);
            _slots.Release();
        }
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
        _bytes.Dispose();
    }
}
