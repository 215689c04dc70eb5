namespace Vdisk.Nbd;

/// <summary>
/// A number of units (64 KiB of request or reply data each) that requests take before they start and give back
/// when their reply has been sent. A request takes all it needs in one grant, and waiters are served in arrival
/// order: two takers can never each hold part of what the other waits for, and a 32 MiB request is not starved by
/// a stream of small ones. One instance bounds a connection, another the whole server.
/// </summary>
internal sealed class NbdByteBudget
{
    public const int UnitSize = 64 << 10;

    private readonly Lock _gate = new();
    private readonly LinkedList<Waiter> _waiters = new();
    private int _available;

    public NbdByteBudget(long bytes)
    {
        Capacity = (int)Math.Max(1, bytes / UnitSize);
        _available = Capacity;
    }

    public int Capacity { get; }

    /// <summary>Units not taken right now.</summary>
    public int Available { get { lock (_gate) return _available; } }

    /// <summary>The units <paramref name="bytes"/> of data need, rounded up and at most the whole budget.</summary>
    public int UnitsFor(long bytes) => (int)Math.Min((bytes + UnitSize - 1) / UnitSize, Capacity);

    /// <summary>Completes once <paramref name="units"/> are granted (at once when free and nobody waits before).</summary>
    public ValueTask TakeAsync(int units, CancellationToken ct)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(units, Capacity);
        if (units <= 0) return ValueTask.CompletedTask;
        Waiter waiter;
        lock (_gate)
        {
            if (_waiters.Count == 0 && _available >= units)
            {
                _available -= units;
                return ValueTask.CompletedTask;
            }
            waiter = new Waiter(units);
            waiter.Node = _waiters.AddLast(waiter);
        }
        return new ValueTask(WaitAsync(waiter, ct));
    }

    private async Task WaitAsync(Waiter waiter, CancellationToken ct)
    {
        using var cancel = ct.Register(() => Cancel(waiter, ct));
        await waiter.Granted.Task.ConfigureAwait(false);
    }

    public void Release(int units)
    {
        if (units <= 0) return;
        List<Waiter>? granted;
        lock (_gate)
        {
            _available += units;
            granted = GrantLocked();
        }
        Complete(granted);
    }

    private void Cancel(Waiter waiter, CancellationToken ct)
    {
        List<Waiter>? granted;
        lock (_gate)
        {
            if (waiter.Node?.List is null) return; // granted already: the taker owns its units and gives them back
            _waiters.Remove(waiter.Node);
            // It may have been the head that held back smaller waiters behind it.
            granted = GrantLocked();
        }
        waiter.Granted.TrySetCanceled(ct);
        Complete(granted);
    }

    private List<Waiter>? GrantLocked()
    {
        List<Waiter>? granted = null;
        while (_waiters.First is { } head && _available >= head.Value.Units)
        {
            _available -= head.Value.Units;
            _waiters.RemoveFirst();
            (granted ??= new()).Add(head.Value);
        }
        return granted;
    }

    // Outside the lock: a waiter's continuation must not run while we hold it.
    private static void Complete(List<Waiter>? granted)
    {
        if (granted is null) return;
        foreach (var w in granted) w.Granted.TrySetResult();
    }

    private sealed class Waiter(int units)
    {
        public int Units { get; } = units;
        public LinkedListNode<Waiter>? Node { get; set; }
        public TaskCompletionSource Granted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
