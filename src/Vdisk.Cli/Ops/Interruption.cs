namespace Vdisk.Cli.Ops;

/// <summary>
/// Turns Ctrl-C (SIGINT) into a cancellation, so that a long command stops between requests and leaves its
/// destination consistent instead of dying in the middle of a metadata update.
/// </summary>
internal sealed class Interruption : IDisposable
{
    private readonly CancellationTokenSource _cts = new();

    public Interruption() => Console.CancelKeyPress += OnCancel;

    public CancellationToken Token => _cts.Token;
    public bool Requested => _cts.IsCancellationRequested;

    private void OnCancel(object? sender, ConsoleCancelEventArgs e)
    {
        // A second Ctrl-C kills the process the usual way.
        if (_cts.IsCancellationRequested) return;
        e.Cancel = true;
        _cts.Cancel();
    }

    public void Dispose()
    {
        Console.CancelKeyPress -= OnCancel;
        _cts.Dispose();
    }
}
