namespace Vdisk.BlockIO;

/// <summary>
/// Counts changes to the file so that a flush with nothing new to make durable costs no fdatasync: image
/// operations that flush at several ordering points (snapshot create, close) often reach one with nothing written
/// since the last. A change counts once it has completed; one still in progress keeps the next flush real.
/// </summary>
public sealed partial class FileBlockDevice
{
    private long _changesStarted;
    private long _changesCompleted;
    private long _durableThrough = -1;

    private void BeginChange() => Interlocked.Increment(ref _changesStarted);
    private void EndChange() => Interlocked.Increment(ref _changesCompleted);

    protected internal override async ValueTask WriteCoreAsync(long offset, ReadOnlyMemory<byte> buffer, bool async, CancellationToken ct)
    {
        BeginChange();
        try { await WriteInnerAsync(offset, buffer, async, ct).ConfigureAwait(false); }
        catch (Exception e) when (IsHostFailure(e)) { throw HostError("write", e, offset); }
        finally { EndChange(); }
    }

    protected internal override async ValueTask WriteGatherCoreAsync(long offset, IReadOnlyList<ReadOnlyMemory<byte>> buffers, bool async, CancellationToken ct)
    {
        BeginChange();
        try { await WriteGatherInnerAsync(offset, buffers, async, ct).ConfigureAwait(false); }
        catch (Exception e) when (IsHostFailure(e)) { throw HostError("write", e, offset); }
        finally { EndChange(); }
    }

    protected internal override async ValueTask WriteZeroesCoreAsync(long offset, long length, bool mayUnmap, bool async, CancellationToken ct)
    {
        BeginChange();
        try { await WriteZeroesInnerAsync(offset, length, mayUnmap, async, ct).ConfigureAwait(false); }
        catch (Exception e) when (IsHostFailure(e)) { throw HostError("write zeroes", e, offset); }
        finally { EndChange(); }
    }

    protected internal override async ValueTask DiscardCoreAsync(long offset, long length, bool async, CancellationToken ct)
    {
        BeginChange();
        try { await DiscardInnerAsync(offset, length, async, ct).ConfigureAwait(false); }
        catch (Exception e) when (IsHostFailure(e)) { throw HostError("discard", e, offset); }
        finally { EndChange(); }
    }

    protected internal override async ValueTask SetLengthCoreAsync(long length, bool async, CancellationToken ct)
    {
        BeginChange();
        try { await SetLengthInnerAsync(length, async, ct).ConfigureAwait(false); }
        catch (Exception e) when (IsHostFailure(e)) { throw HostError("truncate", e, length); }
        finally { EndChange(); }
    }

    protected internal override ValueTask FlushCoreAsync(bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        if (_cache.IgnoresFlush() || IsReadOnly) return ValueTask.CompletedTask;
        long started = Volatile.Read(ref _changesStarted);
        bool quiet = Volatile.Read(ref _changesCompleted) == started;
        if (quiet && Volatile.Read(ref _durableThrough) == started) return ValueTask.CompletedTask;
        Sync();
        // Only a flush that began with nothing in progress covers every change counted so far.
        if (quiet) Volatile.Write(ref _durableThrough, started);
        return ValueTask.CompletedTask;
    }
}
