using System.Buffers;
using Vdisk.BlockIO;

namespace Vdisk.Nbd;

/// <summary>A buffer from <see cref="NbdBufferPool"/>: an array from the shared pool (small) or mapped memory (large).</summary>
internal readonly struct NbdBuffer
{
    private readonly byte[]? _array;
    private readonly AlignedBuffer? _mapped;

    public NbdBuffer(byte[] array, int length) => (_array, Length) = (array, length);
    public NbdBuffer(AlignedBuffer mapped, int length) => (_mapped, Length) = (mapped, length);

    public int Length { get; }
    public Memory<byte> Memory => _array is not null ? _array.AsMemory(0, Length) : _mapped!.Memory[..Length];
    public Span<byte> Span => Memory.Span;
    internal byte[]? Array => _array;
    internal AlignedBuffer? Mapped => _mapped;
}

/// <summary>
/// The server's request and reply buffers. ArrayPool&lt;byte&gt;.Shared keeps arrays of every size per core and per
/// thread and gives them back only at full GCs, which an idle server never has: 32 MiB buffers once used stayed
/// resident for good.
/// Here only small buffers (up to 64 KiB of data and a header) come from it, which it keeps few of; larger ones
/// are mapped memory, kept for reuse while their total (in use and kept) stays within the server's budget, and
/// unmapped, giving the pages back to the system, when the last client leaves (<see cref="Trim"/>) or when none
/// has been asked for during a whole <c>idleTrim</c> period.
/// </summary>
internal sealed class NbdBufferPool : IDisposable
{
    /// <summary>Room for a reply header in front of a large buffer's data, so header and data leave in one send.</summary>
    private const int HeaderRoom = 4096;
    /// <summary>Buffers up to this size come from the shared pool.</summary>
    public const int SharedPoolLimit = (64 << 10) + HeaderRoom;
    // Large buffers come in sizes 2^k + HeaderRoom, from 128 KiB to the maximal payload (32 MiB).
    private const int MinShift = 17, MaxShift = 25;

    private readonly Lock _gate = new();
    private readonly Stack<AlignedBuffer>[] _kept = Enumerable.Range(0, MaxShift - MinShift + 1).Select(_ => new Stack<AlignedBuffer>()).ToArray();
    private readonly long _limit;
    private readonly TimeSpan _idleTrim;
    private readonly Timer _timer;
    private long _rented;         // bytes handed out and not returned, small and large
    private long _mappedInUse;    // of which mapped
    private long _keptBytes;     // mapped, returned and kept for reuse
    private bool _askedSinceTick, _ticking, _disposed;

    /// <param name="limit">Mapped bytes, in use and kept together, beyond which returned buffers are unmapped.</param>
    /// <param name="idleTrim">Kept buffers are unmapped once a whole period passes without a large buffer asked for.</param>
    public NbdBufferPool(long limit, TimeSpan idleTrim)
    {
        _limit = limit;
        _idleTrim = idleTrim;
        _timer = new Timer(_ => Tick());
    }

    /// <summary>Bytes of buffers handed out and not yet returned.</summary>
    public long RentedBytes => Interlocked.Read(ref _rented);

    /// <summary>Bytes of mapped buffers kept for reuse.</summary>
    public long KeptBytes { get { lock (_gate) return _keptBytes; } }

    public static int LargestBuffer => (1 << MaxShift) + HeaderRoom;

    public NbdBuffer Rent(int length)
    {
        if (length <= SharedPoolLimit)
        {
            var array = ArrayPool<byte>.Shared.Rent(length);
            Interlocked.Add(ref _rented, array.Length);
            return new NbdBuffer(array, length);
        }
        int k = ClassOf(length);
        int size = (1 << (k + MinShift)) + HeaderRoom;
        AlignedBuffer? reused;
        List<AlignedBuffer>? evicted = null;
        lock (_gate)
        {
            _askedSinceTick = true;
            if (_kept[k].TryPop(out reused)) _keptBytes -= size;
            else
            {
                // Make room by unmapping kept buffers of other sizes, largest first.
                for (int j = _kept.Length - 1; j >= 0; j--)
                    while (_mappedInUse + _keptBytes + size > _limit && _kept[j].TryPop(out var old))
                    {
                        _keptBytes -= old.Length;
                        (evicted ??= new()).Add(old);
                    }
            }
            _mappedInUse += size;
            Interlocked.Add(ref _rented, size);
        }
        Unmap(evicted);
        try
        {
            return new NbdBuffer(reused ?? AlignedBuffer.Map(size), length);
        }
        catch
        {
            lock (_gate) _mappedInUse -= size;
            Interlocked.Add(ref _rented, -size);
            throw;
        }
    }

    public void Return(NbdBuffer buffer)
    {
        if (buffer.Array is { } array)
        {
            ArrayPool<byte>.Shared.Return(array);
            Interlocked.Add(ref _rented, -array.Length);
            return;
        }
        var mapped = buffer.Mapped!;
        Interlocked.Add(ref _rented, -mapped.Length);
        lock (_gate)
        {
            _mappedInUse -= mapped.Length;
            if (!_disposed && _mappedInUse + _keptBytes + mapped.Length <= _limit)
            {
                _kept[ClassOf(mapped.Length)].Push(mapped);
                _keptBytes += mapped.Length;
                if (!_ticking) _timer.Change(_idleTrim, _idleTrim);
                _ticking = true;
                return;
            }
        }
        ((IDisposable)mapped).Dispose();
    }

    /// <summary>Unmaps every kept buffer (the ones in use are unmapped when they come back, if over the limit).</summary>
    public void Trim() => Unmap(TakeKept(onlyIfIdle: false));

    private void Tick() => Unmap(TakeKept(onlyIfIdle: true));

    private List<AlignedBuffer>? TakeKept(bool onlyIfIdle)
    {
        lock (_gate)
        {
            bool idle = !_askedSinceTick;
            _askedSinceTick = false;
            if (onlyIfIdle && !idle) return null;
            List<AlignedBuffer>? all = null;
            foreach (var stack in _kept)
                while (stack.TryPop(out var b)) (all ??= new()).Add(b);
            _keptBytes = 0;
            if (_ticking && !_disposed) _timer.Change(Timeout.Infinite, Timeout.Infinite);
            _ticking = false;
            return all;
        }
    }

    private static void Unmap(List<AlignedBuffer>? buffers)
    {
        if (buffers is null) return;
        foreach (var b in buffers) ((IDisposable)b).Dispose();
    }

    /// <summary>The class of the smallest large buffer that holds <paramref name="length"/> bytes.</summary>
    private static int ClassOf(int length)
    {
        if (length > LargestBuffer) throw new ArgumentOutOfRangeException(nameof(length), length, "larger than the largest request buffer");
        int k = 0;
        while ((1 << (k + MinShift)) + HeaderRoom < length) k++;
        return k;
    }

    public void Dispose()
    {
        lock (_gate) _disposed = true;
        _timer.Dispose();
        Trim();
    }
}
