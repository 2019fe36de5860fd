namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// qemu-img's <c>-r RATE</c> (convert, commit): bytes written are paced so that, from the first
/// write on, the total never runs ahead of RATE bytes per second. A request is let through whole and
/// the next one waits for the time the bytes before it were due (qemu's block-job rate limit also
/// lets a request go and delays the following ones). Thread-safe: parallel copy requests share one.
/// </summary>
internal sealed class RateLimit
{
    private readonly long _bytesPerSecond;
    private readonly TimeProvider _time;
    private readonly object _gate = new();
    private long _start = -1;
    private long _granted;

    /// <summary>A limit of <paramref name="bytesPerSecond"/> (0: none) measured with <paramref name="time"/>.</summary>
    public RateLimit(long bytesPerSecond, TimeProvider? time = null)
    {
        _bytesPerSecond = bytesPerSecond;
        _time = time ?? TimeProvider.System;
    }

    /// <summary>Waits until <paramref name="bytes"/> more may be written, then counts them.</summary>
    public Task WaitAsync(long bytes, CancellationToken ct)
    {
        if (_bytesPerSecond <= 0) return Task.CompletedTask;
        TimeSpan delay;
        lock (_gate)
        {
            long now = _time.GetTimestamp();
            if (_start < 0) _start = now;
            // When the bytes granted so far are due; this request goes at that time.
            var due = TimeSpan.FromSeconds((double)_granted / _bytesPerSecond);
            delay = due - _time.GetElapsedTime(_start, now);
            _granted += bytes;
        }
        return delay > TimeSpan.Zero ? Task.Delay(delay, _time, ct) : Task.CompletedTask;
    }
}
