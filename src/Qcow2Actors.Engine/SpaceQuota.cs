namespace Qcow2Actors.Engine;

/// <summary>
/// A byte quota on allocated host clusters, shared by every image opened with it
/// (<see cref="Qcow2OpenOptions.Quota"/>), typically one per tenant. An open image counts its
/// clusters whose refcount is above zero (what <c>qemu-img check</c> reports as allocated, metadata
/// included) times the cluster size: charged at open, raised before every new cluster (data,
/// copy-on-write target, L2 table, refcount block, grown table) is mapped, lowered when a cluster's
/// refcount reaches zero, and released at close. A write or write-zeroes that would pass
/// <see cref="LimitBytes"/> fails whole with <see cref="Qcow2NoSpaceException"/> (ENOSPC) and maps nothing.
/// </summary>
/// <remarks>
/// Thread-safe: images on different actors charge the same quota; this object is the one owner
/// of the counter. <see cref="UsedBytes"/> may exceed the limit (images charged at open, a lowered
/// limit, discards, which may always take the table they need): new allocations are then refused
/// until enough is freed.
/// </remarks>
public sealed class SpaceQuota
{
    private readonly object _lock = new();
    private long _used;
    private long? _limit;

    /// <summary>Creates a quota.</summary>
    /// <param name="name">What the quota belongs to (a tenant), named in refusals.</param>
    /// <param name="limitBytes">Most bytes its images may have allocated; null: unlimited (usage is still counted).</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="limitBytes"/> is negative.</exception>
    public SpaceQuota(string name, long? limitBytes)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (limitBytes is < 0) throw new ArgumentOutOfRangeException(nameof(limitBytes), limitBytes, "a quota limit cannot be negative");
        Name = name;
        _limit = limitBytes;
    }

    /// <summary>What the quota belongs to.</summary>
    public string Name { get; }

    /// <summary>
    /// The limit in bytes, or null for none. Setting it takes effect with the next allocation of any
    /// image charging this quota (lowering it below <see cref="UsedBytes"/> frees nothing: it refuses
    /// allocations until usage drops below it).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Set to a negative value.</exception>
    public long? LimitBytes
    {
        get { lock (_lock) return _limit; }
        set
        {
            if (value is < 0) throw new ArgumentOutOfRangeException(nameof(value), value, "a quota limit cannot be negative");
            lock (_lock) _limit = value;
        }
    }

    /// <summary>Bytes charged now: allocated clusters of the open images, space reserved by requests in flight, and what <see cref="Charge"/> added.</summary>
    public long UsedBytes
    {
        get { lock (_lock) return _used; }
    }

    /// <summary>Bytes that may still be allocated (0 when at or over the limit); null without a limit.</summary>
    public long? AvailableBytes
    {
        get
        {
            lock (_lock) return _limit is { } limit ? Math.Max(0, limit - _used) : null;
        }
    }

    /// <summary>
    /// Adds <paramref name="bytes"/> whatever the limit (for images the owner keeps closed, whose
    /// allocated space still counts). An open image charges itself.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="bytes"/> is negative.</exception>
    public void Charge(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        lock (_lock) _used += bytes;
    }

    /// <summary>Adds <paramref name="bytes"/> only if the total stays within the limit; false (nothing added) otherwise.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="bytes"/> is negative.</exception>
    public bool TryCharge(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        lock (_lock)
        {
            if (bytes > 0 && _limit is { } limit && _used + bytes > limit) return false;
            _used += bytes;
            return true;
        }
    }

    /// <summary>Gives back <paramref name="bytes"/> charged earlier (a closed image deleted, for example).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="bytes"/> is negative or more than <see cref="UsedBytes"/>.</exception>
    public void Release(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        lock (_lock)
        {
            if (bytes > _used)
                throw new ArgumentOutOfRangeException(nameof(bytes), bytes, $"quota '{Name}' has only {_used} bytes charged");
            _used -= bytes;
        }
    }

    /// <summary>The refusal of a request that needs <paramref name="bytes"/> more than this quota allows.</summary>
    internal Qcow2NoSpaceException Refusal(string path, long bytes)
    {
        long used, limit;
        lock (_lock)
        {
            used = _used;
            limit = _limit ?? long.MaxValue;
        }
        return new Qcow2NoSpaceException(
            $"'{path}': quota '{Name}' exceeded: the request needs {bytes} bytes of new clusters, {used} of {limit} bytes are in use");
    }

    /// <inheritdoc />
    public override string ToString()
    {
        lock (_lock) return $"{Name}: {_used}/{(_limit is { } l ? l.ToString(System.Globalization.CultureInfo.InvariantCulture) : "unlimited")} bytes";
    }
}
