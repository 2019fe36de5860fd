namespace Qcow2Actors.Nbd.Protocol;

/// <summary>
/// Lets one kind of log line through at most once per interval and counts the ones held back,
/// so a flood (idle clients timing out, accept failing under EMFILE) costs one line, not one per event.
/// </summary>
internal sealed class LogThrottle(TimeProvider time, TimeSpan interval)
{
    private readonly Lock _lock = new();
    private long _next = long.MinValue;
    private int _suppressed;

    /// <summary>The interval between two lines of this kind.</summary>
    public TimeSpan Interval => interval;

    /// <summary>True when this event may be logged; <paramref name="suppressed"/> is how many were held back since the last line.</summary>
    public bool TryEnter(out int suppressed)
    {
        long now = time.GetTimestamp();
        lock (_lock)
        {
            if (now < _next)
            {
                _suppressed++;
                suppressed = 0;
                return false;
            }
            _next = now + (long)(interval.TotalSeconds * time.TimestampFrequency);
            suppressed = _suppressed;
            _suppressed = 0;
            return true;
        }
    }

    /// <summary>" (N more since the last report)" when lines were held back, else empty.</summary>
    public static string More(int suppressed) => suppressed == 0 ? "" : $" ({suppressed} more like it not logged)";
}
