namespace Qcow2Actors.Engine.Write;

/// <summary>
/// When an image's table actors and its cached tables have gone idle, on the engine's clock: a
/// table actor idle for <see cref="EngineSettings.TableIdleTimeout"/> may stop, and an image with
/// no activity for <see cref="EngineSettings.CacheIdleTimeout"/> gives its memory back. The image
/// actor owns it (one thread) and asks it at each tick of a timer with <see cref="Period"/>.
/// </summary>
internal sealed class IdleSweep(TimeProvider time, TimeSpan tableIdleTimeout, TimeSpan cacheIdleTimeout)
{
    // When each table was last routed to, as a timestamp of the clock.
    private readonly Dictionary<int, long> _lastUseAt = new();
    // The activity seen at the last sweep, and when it last changed.
    private long _activityMark = -1;
    private long _lastActiveAt = time.GetTimestamp();

    /// <summary>
    /// Tick period: half the shorter timeout, so a table or an image is found idle between one and
    /// one and a half timeouts after its last use; null when both timeouts are off (zero).
    /// </summary>
    public TimeSpan? Period
    {
        get
        {
            var on = new[] { tableIdleTimeout, cacheIdleTimeout }.Where(t => t > TimeSpan.Zero).ToList();
            return on.Count == 0 ? null : TimeSpan.FromTicks(Math.Max(TimeSpan.TicksPerMillisecond, on.Min().Ticks / 2));
        }
    }

    /// <summary>The clock's timestamp now, for one sweep.</summary>
    public long Now => time.GetTimestamp();

    /// <summary>A request was routed to the table of L1 entry <paramref name="index"/>.</summary>
    public void Used(int index) => _lastUseAt[index] = time.GetTimestamp();

    /// <summary>A caller sent to the table of <paramref name="index"/> directly at <paramref name="at"/> (a timestamp of the clock).</summary>
    public void UsedAt(int index, long at)
    {
        if (!_lastUseAt.TryGetValue(index, out var last) || at > last) _lastUseAt[index] = at;
    }

    /// <summary>The table actor of <paramref name="index"/> is gone.</summary>
    public void Forget(int index) => _lastUseAt.Remove(index);

    /// <summary>Tables idle for at least the table timeout (none when it is off).</summary>
    public List<int> IdleTables(long now) => tableIdleTimeout <= TimeSpan.Zero
        ? []
        : [.. _lastUseAt.Where(kv => time.GetElapsedTime(kv.Value, now) >= tableIdleTimeout).Select(kv => kv.Key)];

    /// <summary>
    /// True when the image has been idle for the cache timeout. <paramref name="activity"/> is any
    /// number that changes whenever the image is used; a change restarts the idle time.
    /// </summary>
    public bool ImageIdle(long activity, long now)
    {
        if (cacheIdleTimeout <= TimeSpan.Zero) return false;
        if (activity != _activityMark)
        {
            _activityMark = activity;
            _lastActiveAt = now;
            return false;
        }
        return time.GetElapsedTime(_lastActiveAt, now) >= cacheIdleTimeout;
    }
}
