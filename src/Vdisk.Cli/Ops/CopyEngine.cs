using Vdisk.Cli.Output;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;

namespace Vdisk.Cli.Ops;

/// <summary>How <see cref="CopyEngine"/> writes the target.</summary>
internal sealed record CopySettings
{
    /// <summary>Write data clusters compressed (-c); the target must be qcow2.</summary>
    public bool Compressed { get; init; }
    /// <summary>Zero runs at least this long (and aligned to it) are not written as data (-S); 0 writes everything.</summary>
    public long MinSparse { get; init; } = 4096;
    /// <summary>The target reads as zeros already: zero ranges need no writes at all.</summary>
    public bool HasZeroInit { get; init; }
    /// <summary>The target has its own backing file: what the source's top layer does not allocate stays unallocated.</summary>
    public bool TargetHasBacking { get; init; }
    /// <summary>Size of the target's backing file; past it zeros need no writes (they read as zeros anyway). -1 if none.</summary>
    public long TargetBackingSize { get; init; } = -1;
    public int Workers { get; init; } = 8;
    /// <summary>Writes may complete in any order (-W); otherwise each chunk is written after the one before it.</summary>
    public bool OutOfOrder { get; init; }
    /// <summary>Largest chunk read and written at once (qemu-img's 2 MiB buffer).</summary>
    public int ChunkSize { get; init; } = 2 << 20;
    /// <summary>Bytes per second the copy may go through (-r); 0 is no limit.</summary>
    public long RateLimit { get; init; }
}

/// <summary>
/// qemu-img convert's copy loop: the sources' block status splits the disk into data, zero and backing ranges;
/// several workers read chunks in parallel and write them (in order unless asked otherwise), skipping what the
/// target already holds and finding zero runs inside data.
/// </summary>
internal sealed class CopyEngine(SourceSet sources, DiskImage target, CopySettings settings, Progress progress)
{
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly System.Diagnostics.Stopwatch _clock = System.Diagnostics.Stopwatch.StartNew();
    private long _next;
    private Task _previousWrite = Task.CompletedTask;
    private readonly int _align = settings.Compressed ? Math.Max(target.ClusterSize, 512) : 512;

    private sealed record Chunk(long Offset, long Length, RangeKind Kind, Task Previous, TaskCompletionSource Done);

    public async Task RunAsync(CancellationToken ct)
    {
        progress.Start(sources.Size);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var workers = Enumerable.Range(0, Math.Max(1, settings.Workers)).Select(_ => Task.Run(() => WorkAsync(stop), CancellationToken.None)).ToArray();
        try { await Task.WhenAll(workers).ConfigureAwait(false); }
        catch when (workers.Any(w => w.IsFaulted))
        {
            // Report the first real failure, not the cancellations it caused in the other workers.
            throw workers.First(w => w.IsFaulted).Exception!.InnerExceptions.First(e => e is not OperationCanceledException);
        }
        await target.FlushAsync(ct).ConfigureAwait(false);
    }

    private async Task WorkAsync(CancellationTokenSource stop)
    {
        var buffer = new byte[settings.ChunkSize];
        try
        {
            while (await NextChunkAsync(stop.Token).ConfigureAwait(false) is { } chunk)
            {
                try
                {
                    if (chunk.Kind == RangeKind.Data)
                    {
                        try { await sources.ReadAsync(chunk.Offset, buffer.AsMemory(0, (int)chunk.Length), stop.Token).ConfigureAwait(false); }
                        catch (IOException e) { throw new CopyException("reading", chunk.Offset, e); }
                    }
                    if (!settings.OutOfOrder) await chunk.Previous.WaitAsync(stop.Token).ConfigureAwait(false);
                    try { await WriteAsync(chunk, buffer.AsMemory(0, (int)chunk.Length), stop.Token).ConfigureAwait(false); }
                    catch (IOException e) { throw new CopyException("writing", chunk.Offset, e); }
                    progress.Add(chunk.Length);
                }
                finally { chunk.Done.TrySetResult(); }
            }
        }
        catch
        {
            stop.Cancel();
            throw;
        }
    }

    /// <summary>Claims the next range to copy: one kind of content, at most a buffer long, aligned for the target.</summary>
    private async Task<Chunk?> NextChunkAsync(CancellationToken ct)
    {
        // Block status is cheap next to the I/O; asking it under one lock keeps the chunks in disk order.
        await _gate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            long offset = _next;
            if (offset >= sources.Size) return null;
            long max = Math.Min(settings.ChunkSize, sources.Size - offset);
            var (kind, length) = await sources.StatusAsync(offset, max, settings.TargetHasBacking, ct).ConfigureAwait(false);
            if (kind == RangeKind.Zero && settings.TargetBackingSize >= 0 && offset >= settings.TargetBackingSize) kind = RangeKind.Backing;
            if (kind == RangeKind.Zero && settings.TargetBackingSize >= 0 && offset < settings.TargetBackingSize)
                length = Math.Min(length, settings.TargetBackingSize - offset);
            // -S 0 allocates everything the target does not leave to its backing file.
            if (kind == RangeKind.Zero && settings.MinSparse == 0) kind = RangeKind.Data;
            long end = offset + length;
            if (end < sources.Size)
            {
                long aligned = end / _align * _align;
                // A range shorter than the alignment is read as data together with its neighbours.
                if (aligned <= offset)
                {
                    kind = RangeKind.Data;
                    end = Math.Min(sources.Size, (offset / _align + 1) * _align);
                }
                else end = aligned;
            }
            if (kind == RangeKind.Data) await ThrottleAsync(end - offset, ct).ConfigureAwait(false);
            var chunk = new Chunk(offset, end - offset, kind, _previousWrite, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
            _previousWrite = chunk.Done.Task;
            _next = end;
            return chunk;
        }
        finally { _gate.Release(); }
    }

    /// <summary>
    /// -r: a data chunk is handed out no sooner than the limit lets the data before it through, so the copy averages
    /// the rate; the first chunk goes at once, like qemu-img's first time slice. Zero and backing ranges move no
    /// data and are not slowed. Called under the chunk gate.
    /// </summary>
    private Task ThrottleAsync(long length, CancellationToken ct)
    {
        if (settings.RateLimit <= 0) return Task.CompletedTask;
        var due = TimeSpan.FromSeconds((double)_dataHandedOut / settings.RateLimit) - _clock.Elapsed;
        _dataHandedOut += length;
        return due > TimeSpan.Zero ? Task.Delay(due, ct) : Task.CompletedTask;
    }

    private long _dataHandedOut;

    private async ValueTask WriteAsync(Chunk chunk, Memory<byte> data, CancellationToken ct)
    {
        switch (chunk.Kind)
        {
            case RangeKind.Backing:
                return;
            case RangeKind.Zero:
                await WriteZerosAsync(chunk.Offset, chunk.Length, ct).ConfigureAwait(false);
                return;
        }
        if (settings.Compressed)
        {
            await WriteCompressedAsync(chunk.Offset, data, ct).ConfigureAwait(false);
            return;
        }
        if (settings.MinSparse == 0)
        {
            await target.WriteAsync(chunk.Offset, data, ct).ConfigureAwait(false);
            return;
        }
        // Runs of whole zero blocks (aligned to -S on the disk) become zero writes; everything else is data.
        long unit = settings.MinSparse;
        int pos = 0;
        while (pos < data.Length)
        {
            int blockEnd = (int)Math.Min(data.Length, ((chunk.Offset + pos) / unit + 1) * unit - chunk.Offset);
            bool zero = blockEnd - pos == unit && IsZero(data.Span[pos..blockEnd]);
            int runEnd = blockEnd;
            while (runEnd < data.Length)
            {
                int nextEnd = (int)Math.Min(data.Length, runEnd + unit);
                bool nextZero = nextEnd - runEnd == unit && IsZero(data.Span[runEnd..nextEnd]);
                if (nextZero != zero) break;
                runEnd = nextEnd;
            }
            if (zero) await WriteZerosAsync(chunk.Offset + pos, runEnd - pos, ct).ConfigureAwait(false);
            else await target.WriteAsync(chunk.Offset + pos, data[pos..runEnd], ct).ConfigureAwait(false);
            pos = runEnd;
        }
    }

    /// <summary>Whole clusters, compressed; clusters that are all zeros are treated as zero ranges (unless -S 0).</summary>
    private async ValueTask WriteCompressedAsync(long offset, Memory<byte> data, CancellationToken ct)
    {
        var image = (Qcow2Image)target;
        int cluster = image.ClusterSize;
        int pos = 0;
        while (pos < data.Length)
        {
            int end = Math.Min(data.Length, pos + cluster);
            bool zero = settings.MinSparse != 0 && IsZero(data.Span[pos..end]);
            int runEnd = end;
            while (runEnd < data.Length)
            {
                int nextEnd = Math.Min(data.Length, runEnd + cluster);
                if ((settings.MinSparse != 0 && IsZero(data.Span[runEnd..nextEnd])) != zero) break;
                runEnd = nextEnd;
            }
            if (zero) await WriteZerosAsync(offset + pos, runEnd - pos, ct).ConfigureAwait(false);
            else await image.WriteCompressedAsync(offset + pos, data[pos..runEnd], ct).ConfigureAwait(false);
            pos = runEnd;
        }
    }

    private ValueTask WriteZerosAsync(long offset, long length, CancellationToken ct) =>
        settings.HasZeroInit ? ValueTask.CompletedTask : target.WriteZeroesAsync(offset, length, mayUnmap: true, ct);

    private static bool IsZero(ReadOnlySpan<byte> span) => !span.ContainsAnyExcept((byte)0);
}

/// <summary>A chunk that could not be read or written, at its guest offset: qemu-img's "error while writing at byte N".</summary>
internal sealed class CopyException(string operation, long guestOffset, IOException inner)
    : IOException($"error while {operation} at byte {guestOffset}: {inner.Message}", inner)
{
    public string Operation { get; } = operation;
    public long GuestOffset { get; } = guestOffset;
}
