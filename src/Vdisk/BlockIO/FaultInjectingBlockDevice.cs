namespace Vdisk.BlockIO;

/// <summary>The device operations a <see cref="FaultRule"/> can target.</summary>
public enum DeviceOperation { Read, Write, WriteZeroes, Discard, Flush, SetLength }

/// <summary>
/// The error an injected fault raises: the <see cref="Images.DiskImageException"/> a <see cref="FileBlockDevice"/> raises
/// when the host fails with that errno (<see cref="Images.DiskImageException.HostError"/>).
/// </summary>
public enum InjectedError { Eio = 5, Enospc = 28 }

/// <summary>
/// When to fail, in the style of a QEMU blkdebug <c>inject-error</c> rule. The rule matches requests of
/// <see cref="Operation"/> that overlap <see cref="Range"/> (any request when null; a set-length request is the point
/// at its new length; a flush has no offset, so a flush rule with a range never matches). It lets the first
/// <c><see cref="Nth"/> - 1</c> matches through, fails the Nth, and then, unless <see cref="Once"/>, every later match.
/// A failed request never reaches the inner device.
/// </summary>
public sealed record FaultRule(DeviceOperation Operation, InjectedError Error = InjectedError.Eio)
{
    public (long Offset, long Length)? Range { get; init; }
    public int Nth { get; init; } = 1;
    public bool Once { get; init; }

    internal bool Matches(DeviceOperation operation, long offset, long length)
    {
        if (operation != Operation) return false;
        if (Range is not { } r) return true;
        if (operation == DeviceOperation.Flush) return false;
        long end = offset + Math.Max(length, 1);
        return offset < r.Offset + r.Length && r.Offset < end;
    }
}

/// <summary>
/// Wraps a device to fail chosen requests (<see cref="AddRule"/>) and to simulate a power loss
/// (<see cref="SimulateCrash"/>): the state as of the last successful flush, with every later write, write-zeroes,
/// discard and set-length dropped. Thread-safe. A write that completes while a flush is running is not counted as
/// flushed by it, the pessimistic choice a crash test wants.
/// </summary>
public sealed class FaultInjectingBlockDevice : BlockDevice
{
    private readonly BlockDevice _inner;
    private readonly bool _leaveInnerOpen;
    private readonly object _lock = new();
    private readonly List<RuleState> _rules = new();
    // The durable state, and the completed requests not yet covered by a successful flush, oldest first.
    private readonly MemoryBlockDevice _durable;
    private readonly List<DeviceRecord> _unflushed = new();
    // Requests ever completed; _unflushed holds numbers [_completed - _unflushed.Count, _completed).
    private long _completed;
    private int _injectedFaults;

    /// <summary>Wraps <paramref name="inner"/>; its current content counts as durable.</summary>
    public FaultInjectingBlockDevice(BlockDevice inner, bool leaveInnerOpen = false)
    {
        _inner = inner;
        _leaveInnerOpen = leaveInnerOpen;
        _durable = DeviceSnapshot.Capture(inner);
    }

    public override string Name => _inner.Name;
    public override bool IsReadOnly => _inner.IsReadOnly;
    public override int Alignment => _inner.Alignment;
    public override long GetLength() => _inner.GetLength();

    /// <summary>How many requests have failed because of a rule.</summary>
    public int InjectedFaults { get { lock (_lock) return _injectedFaults; } }

    /// <summary>How many completed requests a crash now would lose.</summary>
    public int UnflushedCount { get { lock (_lock) return _unflushed.Count; } }

    public FaultRule AddRule(FaultRule rule)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rule.Nth, 1);
        lock (_lock) _rules.Add(new RuleState(rule));
        return rule;
    }

    public bool RemoveRule(FaultRule rule)
    {
        lock (_lock) return _rules.RemoveAll(s => ReferenceEquals(s.Rule, rule)) > 0;
    }

    public void ClearRules()
    {
        lock (_lock) _rules.Clear();
    }

    /// <summary>
    /// A new device holding what a power loss now would leave: the state as of the last successful flush.
    /// Also works after this device is disposed (e.g. by <c>DiskImage.Abandon</c>).
    /// </summary>
    public MemoryBlockDevice SimulateCrash()
    {
        lock (_lock) return _durable.Clone();
    }

    protected internal override async ValueTask ReadCoreAsync(long offset, Memory<byte> buffer, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        InjectFault(DeviceOperation.Read, offset, buffer.Length);
        await _inner.ReadCoreAsync(offset, buffer, async, ct).ConfigureAwait(false);
    }

    protected internal override ValueTask<DeviceExtent> GetExtentCoreAsync(long offset, long maxLength, bool async, CancellationToken ct)
        => _inner.GetExtentCoreAsync(offset, maxLength, async, ct);

    protected internal override async ValueTask WriteCoreAsync(long offset, ReadOnlyMemory<byte> buffer, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        InjectFault(DeviceOperation.Write, offset, buffer.Length);
        var record = DeviceRecord.ForWrite(offset, buffer);
        await _inner.WriteCoreAsync(offset, buffer, async, ct).ConfigureAwait(false);
        Completed(record);
    }

    protected internal override async ValueTask WriteZeroesCoreAsync(long offset, long length, bool mayUnmap, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        InjectFault(DeviceOperation.WriteZeroes, offset, length);
        await _inner.WriteZeroesCoreAsync(offset, length, mayUnmap, async, ct).ConfigureAwait(false);
        Completed(new DeviceRecord(RecordKind.WriteZeroes, offset, length, MayUnmap: mayUnmap));
    }

    protected internal override async ValueTask DiscardCoreAsync(long offset, long length, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        InjectFault(DeviceOperation.Discard, offset, length);
        await _inner.DiscardCoreAsync(offset, length, async, ct).ConfigureAwait(false);
        Completed(new DeviceRecord(RecordKind.Discard, offset, length));
    }

    protected internal override async ValueTask SetLengthCoreAsync(long length, bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        InjectFault(DeviceOperation.SetLength, length, 0);
        await _inner.SetLengthCoreAsync(length, async, ct).ConfigureAwait(false);
        Completed(new DeviceRecord(RecordKind.SetLength, 0, length));
    }

    protected internal override async ValueTask FlushCoreAsync(bool async, CancellationToken ct)
    {
        ThrowIfDisposed();
        InjectFault(DeviceOperation.Flush, 0, 0);
        // Only what completed before the flush started is sure to be covered by it.
        long coveredUpTo;
        lock (_lock) coveredUpTo = _completed;
        await _inner.FlushCoreAsync(async, ct).ConfigureAwait(false);
        lock (_lock)
        {
            // A concurrent flush may already have made some or all of them durable.
            long durableUpTo = _completed - _unflushed.Count;
            int newlyDurable = (int)Math.Max(0, coveredUpTo - durableUpTo);
            foreach (var record in _unflushed.Take(newlyDurable)) record.ApplyTo(_durable);
            _unflushed.RemoveRange(0, newlyDurable);
        }
    }

    private void Completed(DeviceRecord record)
    {
        lock (_lock)
        {
            _unflushed.Add(record);
            _completed++;
        }
    }

    private void InjectFault(DeviceOperation operation, long offset, long length)
    {
        InjectedError error;
        lock (_lock)
        {
            // Every matching rule counts the request, so each rule's Nth is independent of the others.
            RuleState? firing = null;
            foreach (var state in _rules)
                if (state.Rule.Matches(operation, offset, length) && state.CountMatchAndDecide()) firing ??= state;
            if (firing is null) return;
            if (firing.Rule.Once) _rules.Remove(firing);
            _injectedFaults++;
            error = firing.Rule.Error;
        }
        throw Images.DiskImageException.HostError(Name, $"injected {operation.ToString().ToLowerInvariant()}", (int)error, offset);
    }

    private sealed class RuleState(FaultRule rule)
    {
        private int _matches;
        public FaultRule Rule { get; } = rule;

        /// <summary>Counts one more matching request and says whether this one fails.</summary>
        public bool CountMatchAndDecide() => ++_matches >= Rule.Nth;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing && !_leaveInnerOpen) _inner.Dispose();
    }
}
