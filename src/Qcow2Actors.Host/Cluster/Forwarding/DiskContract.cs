namespace Qcow2Actors.Host.Cluster.Forwarding;

/// <summary>
/// The disk contract of one node's export of a cluster image across owner changes: which owner lives acknowledged
/// writes that no successful flush has covered yet, and whether the owner that answers a flush says one of those
/// lives ended without a clean close (so those writes may be gone: the flush must fail with EIO).
/// </summary>
/// <remarks>
/// One per NBD connection (<see cref="ClusterExport.ForConnection"/>). The export advertises NBD_FLAG_CAN_MULTI_CONN,
/// so a flush on one connection vouches for the writes every connection completed: it checks every connection's
/// contract, fails if any lost writes, and marks those connections so their own next flush fails too. Thread-safe.
/// </remarks>
internal sealed class DiskContract
{
    private readonly Lock _lock = new();

    // Incarnation -> the acknowledgement number of its latest acknowledged, not yet flushed write.
    private readonly Dictionary<long, long> _unflushed = [];
    private long _acknowledged;

    private bool _lossPending;

    /// <summary>Another connection's flush found writes of this one lost: this connection's next flush fails too.</summary>
    public void MarkLost()
    {
        lock (_lock) _lossPending = true;
    }

    /// <summary>True (once) when <see cref="MarkLost"/> was called since the last time.</summary>
    public bool TakeLoss()
    {
        lock (_lock)
        {
            bool pending = _lossPending;
            _lossPending = false;
            return pending;
        }
    }

    /// <summary>A write (write, write-zeroes, trim) was acknowledged by <paramref name="life"/>.</summary>
    public void Acknowledged(OwnerLife life)
    {
        lock (_lock) _unflushed[life.Incarnation] = ++_acknowledged;
    }

    /// <summary>Call as a flush starts: the writes acknowledged so far are the ones it can cover.</summary>
    public long BeginFlush()
    {
        lock (_lock) return _acknowledged;
    }

    /// <summary>True while some acknowledged write waits for a flush.</summary>
    public bool HasUnflushed
    {
        get { lock (_lock) return _unflushed.Count > 0; }
    }

    /// <summary>
    /// A flush begun at <paramref name="begun"/> succeeded on <paramref name="life"/>. Returns the incarnations whose
    /// acknowledged writes may have been lost (the flush must fail with EIO; empty: it succeeds). Either way the
    /// writes it covered are settled: durable, or reported lost now (and not again).
    /// </summary>
    public IReadOnlyList<long> CompleteFlush(long begun, OwnerLife life)
    {
        lock (_lock)
        {
            List<long> lost = [];
            foreach (var (incarnation, last) in _unflushed.ToList())
            {
                if (incarnation < life.Incarnation && incarnation <= life.LostThrough)
                {
                    // An earlier life that ended without a clean close: its unflushed writes may be gone.
                    lost.Add(incarnation);
                    _unflushed.Remove(incarnation);
                }
                else if (incarnation < life.Incarnation || last <= begun)
                {
                    // Closed clean (checkpointed) by an earlier life, or covered by this flush.
                    _unflushed.Remove(incarnation);
                }
            }
            return lost;
        }
    }
}
