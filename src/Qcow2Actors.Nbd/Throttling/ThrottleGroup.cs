using System.Threading.RateLimiting;

namespace Qcow2Actors.Nbd.Throttling;

/// <summary>
/// A throttle group as QEMU has them: one set of limits (<see cref="ThrottleLimits"/>) shared by every
/// export that joins it (a <see cref="ThrottledExport"/> given this group). Requests over the limits
/// wait in the group; the limits can change at any time with <see cref="Update"/>.
/// </summary>
/// <remarks>
/// <para>
/// Each limit is a leaky bucket drained continuously by the clock of the injected
/// <see cref="System.TimeProvider"/>; one timer on that clock wakes the group when the next waiting
/// request may go. Waiting requests queue per export and per direction, first in first out; the
/// group serves the exports round-robin (a busy export cannot crowd out a quiet one) and alternates
/// reads and writes when both wait on a shared total limit (neither starves the other).
/// </para>
/// <para>
/// Built on System.Threading.RateLimiting's abstractions (each export's membership is a
/// <see cref="PartitionedRateLimiter{TResource}"/>, a request a lease) rather than on its
/// <see cref="TokenBucketRateLimiter"/>: that limiter cannot run on a <see cref="System.TimeProvider"/>
/// (even with manual replenishment it measures elapsed time with the real clock), refuses a request
/// larger than its bucket instead of letting it through and delaying the ones behind it, has one
/// shared FIFO (no per-export round-robin, no separate read and write queues), cannot take permits
/// from several buckets at once, and fixes its limits at construction.
/// </para>
/// </remarks>
public sealed class ThrottleGroup : IDisposable
{
    private const int BytesTotal = 0, BytesRead = 1, BytesWrite = 2, OpsTotal = 3, OpsRead = 4, OpsWrite = 5;

    private readonly Lock _lock = new();
    private readonly LeakyBucket[] _buckets = new LeakyBucket[6];
    private readonly List<ThrottleMember> _members = [];
    private readonly int[] _nextMember = new int[2];
    private readonly int[] _queued = new int[2];
    private readonly ITimer _timer;
    private ThrottleLimits _limits;
    private long _lastDrain;
    private long _armedFor = long.MaxValue;
    private ThrottleDirection _servedLast = ThrottleDirection.Write;
    private volatile bool _unlimited;
    private bool _disposed;

    /// <summary>
    /// Creates a group named <paramref name="name"/> with <paramref name="limits"/>, timed by
    /// <paramref name="time"/> (the system clock when null).
    /// </summary>
    /// <exception cref="ArgumentException">The name is empty, or the limits are invalid (<see cref="ThrottleLimits.Validate"/>).</exception>
    public ThrottleGroup(string name, ThrottleLimits limits, TimeProvider? time = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(limits);
        limits.Validate();
        Name = name;
        TimeProvider = time ?? TimeProvider.System;
        _timer = TimeProvider.CreateTimer(static state => ((ThrottleGroup)state!).OnTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        _limits = limits;
        _lastDrain = TimeProvider.GetTimestamp();
        Configure(limits);
    }

    /// <summary>The group's name (for logs and the control API).</summary>
    public string Name { get; }

    /// <summary>The clock the buckets drain by and the waits are timed on.</summary>
    public TimeProvider TimeProvider { get; }

    /// <summary>The limits in force.</summary>
    public ThrottleLimits Limits
    {
        get
        {
            lock (_lock) return _limits;
        }
    }

    /// <summary>Requests waiting in the group now, from every export in it.</summary>
    public int QueuedRequests
    {
        get
        {
            lock (_lock) return _queued[0] + _queued[1];
        }
    }

    /// <summary>
    /// Replaces the limits. Requests already waiting are measured against the new limits at once
    /// (raising or removing a limit releases them without waiting for their old turn), and so is
    /// every request after; clients stay connected. As in QEMU, the buckets start empty.
    /// </summary>
    /// <exception cref="ArgumentException">The limits are invalid (<see cref="ThrottleLimits.Validate"/>).</exception>
    public void Update(ThrottleLimits limits)
    {
        ArgumentNullException.ThrowIfNull(limits);
        limits.Validate();
        List<ThrottleWaiter>? ready = null;
        lock (_lock)
        {
            if (_disposed) return;
            _limits = limits;
            var now = TimeProvider.GetTimestamp();
            _lastDrain = now;
            Configure(limits);
            Pump(now, ref ready);
        }
        Finish(ready, ThrottleLease.Admitted);
    }

    /// <summary>Stops the timer and lets every waiting request through; afterwards the group admits everything.</summary>
    public void Dispose()
    {
        List<ThrottleWaiter>? all = null;
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            _unlimited = true;
            foreach (var member in _members)
            {
                foreach (var queue in new[] { member.Queue(ThrottleDirection.Read), member.Queue(ThrottleDirection.Write) })
                {
                    while (queue.First is { } node)
                    {
                        queue.RemoveFirst();
                        (all ??= []).Add(node.Value);
                    }
                }
            }
            _queued[0] = _queued[1] = 0;
        }
        _timer.Dispose();
        Finish(all, ThrottleLease.Admitted);
    }

    /// <summary>Adds an export to the group.</summary>
    internal ThrottleMember Join(string exportName)
    {
        var member = new ThrottleMember(this, exportName);
        lock (_lock) _members.Add(member);
        return member;
    }

    /// <summary>Removes an export; its waiting requests are answered "not admitted" and re-checked against the export's current groups.</summary>
    internal void Leave(ThrottleMember member)
    {
        List<ThrottleWaiter>? left = null;
        lock (_lock)
        {
            if (member.HasLeft) return;
            member.HasLeft = true;
            _members.Remove(member);
            foreach (var direction in (ReadOnlySpan<ThrottleDirection>)[ThrottleDirection.Read, ThrottleDirection.Write])
            {
                var queue = member.Queue(direction);
                while (queue.First is { } node)
                {
                    queue.RemoveFirst();
                    _queued[(int)direction]--;
                    (left ??= []).Add(node.Value);
                }
            }
        }
        Finish(left, ThrottleLease.NotAdmitted);
    }

    /// <summary>Admits and charges the request now if nothing of its direction waits and the limits allow it.</summary>
    internal bool TryAdmit(ThrottleMember member, ThrottleDirection direction, long bytes, int operations)
    {
        if (_unlimited) return true;
        lock (_lock) return TryAdmitLocked(member, direction, bytes, operations, TimeProvider.GetTimestamp());
    }

    /// <summary>Admits the request now, or queues it until the limits allow it.</summary>
    internal ValueTask<RateLimitLease> AcquireAsync(ThrottleMember member, ThrottleDirection direction, long bytes, int operations, CancellationToken cancellationToken)
    {
        if (_unlimited) return ValueTask.FromResult<RateLimitLease>(ThrottleLease.Admitted);
        if (cancellationToken.IsCancellationRequested) return ValueTask.FromCanceled<RateLimitLease>(cancellationToken);
        ThrottleWaiter waiter;
        lock (_lock)
        {
            if (member.HasLeft) return ValueTask.FromResult<RateLimitLease>(ThrottleLease.NotAdmitted);
            var now = TimeProvider.GetTimestamp();
            if (TryAdmitLocked(member, direction, bytes, operations, now)) return ValueTask.FromResult<RateLimitLease>(ThrottleLease.Admitted);
            waiter = new ThrottleWaiter(member, direction, bytes, operations);
            member.Queue(direction).AddLast(waiter.Node);
            _queued[(int)direction]++;
            Arm(now);
        }
        waiter.Watch(cancellationToken);
        return new ValueTask<RateLimitLease>(waiter.Task);
    }

    /// <summary>The token of a waiting request fired: take it out of the queue and cancel it.</summary>
    internal void Cancel(ThrottleWaiter waiter, CancellationToken token)
    {
        lock (_lock)
        {
            // Already admitted or released: that answer stands.
            if (waiter.Node.List is not { } queue) return;
            queue.Remove(waiter.Node);
            _queued[(int)waiter.Direction]--;
        }
        waiter.Finish(null, token);
    }

    internal RateLimiterStatistics Statistics(ThrottleMember member, ThrottleDirection direction, long admitted)
    {
        lock (_lock)
        {
            return new RateLimiterStatistics
            {
                CurrentQueuedCount = member.Queue(direction).Count,
                TotalSuccessfulLeases = admitted,
                CurrentAvailablePermits = _unlimited || (_queued[(int)direction] == 0 && WaitSeconds(direction) == 0) ? 1 : 0,
            };
        }
    }

    private bool TryAdmitLocked(ThrottleMember member, ThrottleDirection direction, long bytes, int operations, long now)
    {
        if (_unlimited || member.HasLeft) return true;
        // Someone of this direction is already waiting: queue behind them (no overtaking).
        if (_queued[(int)direction] > 0) return false;
        Drain(now);
        if (WaitSeconds(direction) > 0) return false;
        Charge(direction, bytes, operations);
        member.CountAdmitted();
        return true;
    }

    private void OnTimer()
    {
        List<ThrottleWaiter>? ready = null;
        lock (_lock)
        {
            _armedFor = long.MaxValue;
            if (_disposed) return;
            Pump(TimeProvider.GetTimestamp(), ref ready);
        }
        Finish(ready, ThrottleLease.Admitted);
    }

    /// <summary>Admits every waiting request the limits allow now, then sets the timer for the next one.</summary>
    private void Pump(long now, ref List<ThrottleWaiter>? ready)
    {
        Drain(now);
        while (_queued[0] + _queued[1] > 0)
        {
            // The direction not served last goes first, so reads and writes alternate on a shared limit.
            var first = _servedLast == ThrottleDirection.Read ? ThrottleDirection.Write : ThrottleDirection.Read;
            if (!TryServe(first, ref ready) && !TryServe(_servedLast, ref ready)) break;
        }
        Arm(now);
    }

    private bool TryServe(ThrottleDirection direction, ref List<ThrottleWaiter>? ready)
    {
        if (_queued[(int)direction] == 0 || (!_unlimited && WaitSeconds(direction) > 0)) return false;
        var waiter = DequeueRoundRobin(direction);
        Charge(direction, waiter.Bytes, waiter.Operations);
        waiter.Member.CountAdmitted();
        _servedLast = direction;
        (ready ??= []).Add(waiter);
        return true;
    }

    /// <summary>The head of the next member's queue after the one served last in this direction.</summary>
    private ThrottleWaiter DequeueRoundRobin(ThrottleDirection direction)
    {
        int count = _members.Count;
        int start = _nextMember[(int)direction];
        for (int i = 0; i < count; i++)
        {
            int index = (start + i) % count;
            var queue = _members[index].Queue(direction);
            if (queue.First is not { } node) continue;
            queue.RemoveFirst();
            _queued[(int)direction]--;
            _nextMember[(int)direction] = (index + 1) % count;
            return node.Value;
        }
        throw new InvalidOperationException($"throttle group '{Name}' counts a waiting {direction} request no member holds");
    }

    /// <summary>Sets the timer for when the first waiting request may go, unless it is already set for earlier.</summary>
    private void Arm(long now)
    {
        if (_queued[0] + _queued[1] == 0 || _disposed) return;
        double wait = double.MaxValue;
        for (int d = 0; d < 2; d++)
        {
            if (_queued[d] > 0) wait = Math.Min(wait, WaitSeconds((ThrottleDirection)d));
        }
        // Rounded up to whole ticks: waking a hair early would only find the bucket still over.
        var delay = TimeSpan.FromTicks(Math.Max(1, (long)Math.Ceiling(wait * TimeSpan.TicksPerSecond)));
        long due = now + (long)(delay.TotalSeconds * TimeProvider.TimestampFrequency);
        if (due >= _armedFor) return;
        _armedFor = due;
        _timer.Change(delay, Timeout.InfiniteTimeSpan);
    }

    private void Configure(ThrottleLimits limits)
    {
        double burst = limits.EffectiveBurstLength.TotalSeconds;
        _buckets[BytesTotal].Configure(limits.Bps, limits.BurstBps, burst);
        _buckets[BytesRead].Configure(limits.ReadBps, limits.BurstBps, burst);
        _buckets[BytesWrite].Configure(limits.WriteBps, limits.BurstBps, burst);
        _buckets[OpsTotal].Configure(limits.Iops, limits.BurstIops, burst);
        _buckets[OpsRead].Configure(limits.ReadIops, limits.BurstIops, burst);
        _buckets[OpsWrite].Configure(limits.WriteIops, limits.BurstIops, burst);
        _unlimited = limits.IsUnlimited;
    }

    private void Drain(long now)
    {
        double seconds = (double)(now - _lastDrain) / TimeProvider.TimestampFrequency;
        _lastDrain = now;
        if (seconds <= 0) return;
        for (int i = 0; i < _buckets.Length; i++) _buckets[i].Drain(seconds);
    }

    /// <summary>Seconds until a request of <paramref name="direction"/> may go: the longest wait among the limits it is charged to.</summary>
    private double WaitSeconds(ThrottleDirection direction)
    {
        var (bytes, ops) = direction == ThrottleDirection.Read ? (BytesRead, OpsRead) : (BytesWrite, OpsWrite);
        return Math.Max(
            Math.Max(_buckets[BytesTotal].Wait(), _buckets[OpsTotal].Wait()),
            Math.Max(_buckets[bytes].Wait(), _buckets[ops].Wait()));
    }

    private void Charge(ThrottleDirection direction, long bytes, int operations)
    {
        var (bytesBucket, opsBucket) = direction == ThrottleDirection.Read ? (BytesRead, OpsRead) : (BytesWrite, OpsWrite);
        _buckets[BytesTotal].Add(bytes);
        _buckets[bytesBucket].Add(bytes);
        _buckets[OpsTotal].Add(operations);
        _buckets[opsBucket].Add(operations);
    }

    /// <summary>Answers waiters outside the lock (their continuations run on the thread pool).</summary>
    private static void Finish(List<ThrottleWaiter>? waiters, RateLimitLease lease)
    {
        if (waiters is null) return;
        foreach (var waiter in waiters) waiter.Finish(lease);
    }
}
