namespace Qcow2Actors.Engine.Write;

/// <summary>
/// What one open image has charged to its <see cref="SpaceQuota"/>: its allocated clusters (refcount
/// above 0) times the cluster size, charged at open, kept equal to the refcounts after every change
/// (<see cref="Settle"/>, called by the <see cref="RefcountAllocator"/> under its lock, the one place
/// refcounts change) and released at close.
/// </summary>
internal sealed class ImageSpaceAccount
{
    private readonly object _lock = new();
    private readonly string _path;
    private readonly long _clusterSize;
    private long _baseClusters;
    private long _charged;
    private bool _closed;

    /// <param name="quota">The quota charged.</param>
    /// <param name="path">The image, named in refusals.</param>
    /// <param name="clusterSize">Bytes per cluster.</param>
    /// <param name="allocatedClusters">Clusters with a refcount above 0 at open (charged now, whatever the limit).</param>
    /// <param name="baseDelta">The refcount state's <see cref="RefcountState.AllocatedDelta"/> at the time of the count.</param>
    public ImageSpaceAccount(SpaceQuota quota, string path, long clusterSize, long allocatedClusters, long baseDelta)
    {
        Quota = quota;
        _path = path;
        _clusterSize = clusterSize;
        _baseClusters = allocatedClusters - baseDelta;
        _charged = allocatedClusters * clusterSize;
        quota.Charge(_charged);
    }

    public SpaceQuota Quota { get; }

    /// <summary>Bytes this image has charged now.</summary>
    public long ChargedBytes
    {
        get { lock (_lock) return _charged; }
    }

    /// <summary>
    /// Holds <paramref name="clusters"/> clusters' worth in a reservation under <paramref name="parent"/>
    /// (or the quota) before an allocation changes anything; refused with <see cref="Qcow2NoSpaceException"/>.
    /// </summary>
    public SpaceReservation Admit(long clusters, SpaceReservation? parent, bool unlimited)
    {
        var local = new SpaceReservation(Quota, parent);
        if (!local.TryEnsure(clusters * _clusterSize, unlimited))
        {
            local.Dispose();
            throw Quota.Refusal(_path, clusters * _clusterSize);
        }
        return local;
    }

    /// <summary>
    /// Brings the charge to the refcounts' state: new clusters are paid from <paramref name="from"/>
    /// (what was admitted for them), clusters back at refcount 0 are released to the quota.
    /// </summary>
    public void Settle(long allocatedDelta, SpaceReservation? from)
    {
        lock (_lock)
        {
            if (_closed) return;
            long target = (_baseClusters + allocatedDelta) * _clusterSize;
            long diff = target - _charged;
            if (diff > 0)
            {
                // Admitted before the change; anything beyond (never expected) is charged after the fact.
                long covered = from?.Consume(diff) ?? 0;
                if (diff > covered) Quota.Charge(diff - covered);
            }
            else if (diff < 0)
            {
                Quota.Release(-diff);
            }
            _charged = target;
        }
    }

    /// <summary>
    /// The refcounts were reloaded (an online snapshot edit): the charge becomes
    /// <paramref name="allocatedClusters"/> clusters, whatever the limit (the edit already happened),
    /// and later settles follow the new state's <paramref name="baseDelta"/>.
    /// </summary>
    public void Rebase(long allocatedClusters, long baseDelta)
    {
        lock (_lock)
        {
            if (_closed) return;
            _baseClusters = allocatedClusters - baseDelta;
            long target = allocatedClusters * _clusterSize;
            if (target > _charged) Quota.Charge(target - _charged);
            else if (target < _charged) Quota.Release(_charged - target);
            _charged = target;
        }
    }

    /// <summary>The image closed (or its host stopped): everything it charged goes back, once.</summary>
    public void Close()
    {
        lock (_lock)
        {
            if (_closed) return;
            _closed = true;
            Quota.Release(_charged);
            _charged = 0;
        }
    }
}
