using System.Collections.Concurrent;

namespace Vdisk.Formats.Qcow2.Compression;

/// <summary>
/// Keeps a few codec contexts for reuse. Contexts cost hundreds of KiB to megabytes each, so the
/// pool is capped: under a burst of concurrent callers the surplus is disposed on return instead of
/// growing the pool with every thread that ever compressed a cluster.
/// </summary>
internal sealed class ContextPool<T>(Func<T> create, int capacity) where T : class, IDisposable
{
    private readonly ConcurrentQueue<T> _idle = new();
    private int _idleCount;

    public T Rent()
    {
        if (_idle.TryDequeue(out var item))
        {
            Interlocked.Decrement(ref _idleCount);
            return item;
        }
        return create();
    }

    public void Return(T item)
    {
        if (Interlocked.Increment(ref _idleCount) <= capacity)
        {
            _idle.Enqueue(item);
            return;
        }
        Interlocked.Decrement(ref _idleCount);
        item.Dispose();
    }
}
