using Vdisk.BlockIO;
using Vdisk.Images;

namespace Vdisk.Cli.Commands;

/// <summary>
/// One benchmark run. Requests are numbered; request i goes to (offset + i*step) mod the image size, except the
/// first, which goes to the offset as given (so a start past the end fails, as in qemu-img). With a flush interval
/// the run drains and flushes whenever the number of requests not yet issued is a multiple of it; with
/// --no-drain the flush is issued alongside the requests instead.
/// </summary>
internal sealed class BenchRun(DiskImage image, BenchCommand.Settings settings)
{
    private readonly long _imageSize = image.Size;
    private readonly List<Task> _looseFlushes = new();
    private long _next;
    private long _segmentEnd;

    public async Task RunAsync()
    {
        var buffers = new AlignedBuffer?[Math.Max(1, settings.Depth)];
        try
        {
            int alignment = Math.Max(image.Device.Alignment, 512);
            for (int w = 0; w < buffers.Length && settings.Size > 0; w++)
            {
                buffers[w] = AlignedBuffer.Allocate(settings.Size, alignment);
                buffers[w]!.GetSpan().Fill(settings.Pattern);
            }
            bool drainAndFlush = settings.FlushInterval > 0 && settings.Drain;
            foreach (long end in drainAndFlush ? Boundaries() : new[] { settings.Count })
            {
                _segmentEnd = end;
                int workers = (int)Math.Min(settings.Depth, end - _next);
                var tasks = new Task[workers];
                for (int w = 0; w < workers; w++) tasks[w] = Worker(buffers[w]?.Memory ?? Memory<byte>.Empty);
                await Task.WhenAll(tasks).ConfigureAwait(false);
                _next = end;
                if (drainAndFlush) await image.FlushAsync().ConfigureAwait(false);
            }
            Task[] loose;
            lock (_looseFlushes) loose = _looseFlushes.ToArray();
            await Task.WhenAll(loose).ConfigureAwait(false);
        }
        finally
        {
            foreach (var b in buffers) ((IDisposable?)b)?.Dispose();
        }
    }

    /// <summary>Where the drained flushes fall: after the first fill, whenever the unissued count is a multiple of the interval.</summary>
    private IEnumerable<long> Boundaries()
    {
        long firstFill = Math.Min(settings.Depth, settings.Count);
        long interval = settings.FlushInterval;
        long first = settings.Count - (settings.Count - firstFill) / interval * interval;
        for (long s = first; s <= settings.Count; s += interval) yield return s;
    }

    private async Task Worker(Memory<byte> buffer)
    {
        while (true)
        {
            long i = Interlocked.Increment(ref _next) - 1;
            if (i >= _segmentEnd) return;
            long offset = OffsetOf(i);
            if (settings.Write) await image.WriteAsync(offset, buffer).ConfigureAwait(false);
            else await image.ReadAsync(offset, buffer).ConfigureAwait(false);
            if (settings.FlushInterval > 0 && !settings.Drain)
            {
                long unissued = Math.Max(0, settings.Count - Volatile.Read(ref _next));
                if (unissued % settings.FlushInterval == 0)
                    lock (_looseFlushes) _looseFlushes.Add(image.FlushAsync().AsTask());
            }
        }
    }

    private long OffsetOf(long i)
    {
        if (i == 0) return settings.Offset;
        if (_imageSize == 0) return 0;
        return (long)(((Int128)settings.Offset + (Int128)i * settings.Step) % _imageSize);
    }
}
