namespace Qcow2Actors.Engine.Write;

/// <summary>
/// Bytes of a <see cref="SpaceQuota"/> set aside for one request (or one step of it) before anything
/// is mapped, so a request that would pass the limit is refused before it changes anything. The bytes
/// count in <see cref="SpaceQuota.UsedBytes"/> from the moment they are reserved; what the request
/// allocates is taken from them (<see cref="ImageSpaceAccount.Settle"/>) and the rest goes back at
/// <see cref="Dispose"/>: to the parent reservation if there is one, else to the quota.
/// </summary>
/// <remarks>
/// Nested: a request reserves for every L2 table it touches (image level), each table operation
/// claims its exact need from that (table actor), and each allocation claims its own from the
/// operation's. Thread-safe: the operations of one request run on different table actors.
/// </remarks>
internal sealed class SpaceReservation : IDisposable
{
    private readonly object _lock = new();
    private readonly SpaceReservation? _parent;
    private long _remaining;
    private bool _disposed;

    public SpaceReservation(SpaceQuota quota, SpaceReservation? parent = null)
    {
        Quota = quota;
        _parent = parent;
    }

    public SpaceQuota Quota { get; }

    /// <summary>Bytes held and not used yet.</summary>
    public long Remaining
    {
        get { lock (_lock) return _remaining; }
    }

    /// <summary>
    /// Makes sure at least <paramref name="bytes"/> are held: from what this holds, then its parents,
    /// then the quota, which may refuse (false; anything taken stays held until <see cref="Dispose"/>).
    /// <paramref name="unlimited"/> (discards) charges the quota whatever its limit.
    /// </summary>
    public bool TryEnsure(long bytes, bool unlimited)
    {
        lock (_lock)
        {
            long missing = bytes - _remaining;
            if (missing <= 0) return true;
            long got = _parent?.TakeUpTo(missing) ?? 0;
            _remaining += got;
            missing -= got;
            if (missing == 0) return true;
            if (unlimited) Quota.Charge(missing);
            else if (!Quota.TryCharge(missing)) return false;
            _remaining += missing;
            return true;
        }
    }

    /// <summary>Uses up to <paramref name="bytes"/> of what is held (now charged to an image); returns how many it covered.</summary>
    public long Consume(long bytes)
    {
        lock (_lock)
        {
            long used = Math.Min(bytes, _remaining);
            _remaining -= used;
            return used;
        }
    }

    /// <summary>Takes up to <paramref name="bytes"/> from this reservation and its parents (never from the quota).</summary>
    private long TakeUpTo(long bytes)
    {
        long got;
        lock (_lock)
        {
            got = Math.Min(bytes, _remaining);
            _remaining -= got;
        }
        if (got < bytes && _parent is not null) got += _parent.TakeUpTo(bytes - got);
        return got;
    }

    private void Give(long bytes)
    {
        lock (_lock)
        {
            if (!_disposed)
            {
                _remaining += bytes;
                return;
            }
        }
        // A child that outlived this reservation: its rest goes where this one's went.
        GiveUp(bytes);
    }

    /// <summary>Gives back what was not used: to the parent reservation, or to the quota. Bytes a child gives back later follow the same way.</summary>
    public void Dispose()
    {
        long rest;
        lock (_lock)
        {
            rest = _remaining;
            _remaining = 0;
            _disposed = true;
        }
        if (rest != 0) GiveUp(rest);
    }

    private void GiveUp(long bytes)
    {
        if (_parent is not null) _parent.Give(bytes);
        else Quota.Release(bytes);
    }
}
