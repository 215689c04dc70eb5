using System.Runtime.InteropServices;

namespace Vdisk.Cli.Ops;

/// <summary>
/// Turns Ctrl-C (SIGINT) into a cancellation, so that a long command stops between requests and leaves its
/// destination consistent instead of dying in the middle of a metadata update. A POSIX signal registration rather
/// than Console.CancelKeyPress, which would set the terminal up for the runtime's console first.
/// </summary>
internal sealed class Interruption : IDisposable
{
    private readonly CancellationTokenSource _cts = new();
    private readonly PosixSignalRegistration _registration;

    public Interruption() => _registration = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);

    public CancellationToken Token => _cts.Token;
    public bool Requested => _cts.IsCancellationRequested;

    private void OnSignal(PosixSignalContext context)
    {
        // A second Ctrl-C kills the process the usual way.
        if (_cts.IsCancellationRequested) return;
        context.Cancel = true;
        _cts.Cancel();
    }

    public void Dispose()
    {
        _registration.Dispose();
        _cts.Dispose();
    }
}
