using System.Globalization;

namespace Vdisk.Cli.Output;

/// <summary>
/// qemu-img's -p progress: "    (NN.NN/100%)\r" lines when stdout is not a terminal (what scripts parse), a live
/// bar when it is, nothing when disabled. Thread-safe: workers report completed bytes as they finish.
/// </summary>
internal sealed class Progress
{
    private readonly TextWriter _out;
    private readonly bool _enabled;
    private readonly bool _terminal;
    private readonly double _minStep;
    private readonly object _gate = new();
    private long _total = 1, _done;
    private readonly System.Diagnostics.Stopwatch _clock = System.Diagnostics.Stopwatch.StartNew();
    private double _printed = -1;

    /// <param name="minStep">Percent that must pass between two prints (qemu-img: 1 for convert, 2 for compare).</param>
    public Progress(TextWriter output, bool enabled, double minStep = 1.0, bool? terminal = null)
    {
        _out = output;
        _enabled = enabled;
        _minStep = minStep;
        _terminal = terminal ?? (ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected);
    }

    public void Start(long total)
    {
        _total = Math.Max(1, total);
        _clock.Restart();
        Print(0, force: true);
    }

    public void Add(long bytes)
    {
        if (!_enabled) return;
        lock (_gate)
        {
            _done += bytes;
            double pct = Math.Min(100.0, _done * 100.0 / _total);
            if (pct - _printed >= _minStep || (pct >= 100.0 && _printed < 100.0)) Print(pct, force: false);
        }
    }

    /// <summary>Ends the progress line (qemu-img prints a newline once it is done).</summary>
    public void End()
    {
        if (!_enabled) return;
        lock (_gate)
        {
            if (_printed < 100.0 && _done >= _total) Print(100, force: false);
            _out.Write('\n');
            _out.Flush();
        }
    }

    /// <summary>Throughput so far, in MiB/s.</summary>
    private string Rate()
    {
        double seconds = Math.Max(_clock.Elapsed.TotalSeconds, 1e-3);
        return string.Create(CultureInfo.InvariantCulture, $"{_done / seconds / (1 << 20),8:F1} MiB/s");
    }

    /// <summary>Time left at the throughput so far ("--:--" until there is one).</summary>
    private string TimeLeft()
    {
        double seconds = _clock.Elapsed.TotalSeconds;
        if (_done <= 0 || seconds <= 0) return "--:-- left";
        var left = TimeSpan.FromSeconds(Math.Min((_total - _done) * seconds / _done, 359999));
        return string.Create(CultureInfo.InvariantCulture, $"{(int)left.TotalMinutes:D2}:{left.Seconds:D2} left");
    }

    private void Print(double pct, bool force)
    {
        if (!_enabled) return;
        lock (_gate)
        {
            if (!force && pct <= _printed) return;
            _printed = pct;
            if (_terminal)
            {
                int filled = (int)(pct / 100.0 * 40);
                _out.Write(string.Create(CultureInfo.InvariantCulture,
                    $"\r[{new string('#', filled)}{new string(' ', 40 - filled)}] {pct,6:F2}%  {Rate()}  {TimeLeft()}   "));
            }
            else _out.Write(string.Create(CultureInfo.InvariantCulture, $"    ({pct:F2}/100%)\r"));
            _out.Flush();
        }
    }
}
