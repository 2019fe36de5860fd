using System.Threading.RateLimiting;

namespace Qcow2Actors.Nbd.Throttling;

/// <summary>
/// One export's place in a <see cref="ThrottleGroup"/>, seen as a System.Threading.RateLimiting
/// limiter partitioned by direction: a lease is one request admitted and charged to the group's
/// buckets. The member keeps the export's waiting requests, one FIFO queue per direction; the group
/// serves its members round-robin, so exports sharing a group share it fairly.
/// </summary>
/// <remarks>Queues and counters are guarded by the group's lock.</remarks>
internal sealed class ThrottleMember : PartitionedRateLimiter<ThrottleRequest>
{
    private readonly LinkedList<ThrottleWaiter>[] _queues = [new(), new()];
    private long _admitted;

    public ThrottleMember(ThrottleGroup group, string exportName)
    {
        Group = group;
        ExportName = exportName;
    }

    public ThrottleGroup Group { get; }

    public string ExportName { get; }

    /// <summary>True once the member left its group (the export dropped the group, or was disposed).</summary>
    public bool HasLeft { get; set; }

    public LinkedList<ThrottleWaiter> Queue(ThrottleDirection direction) => _queues[(int)direction];

    /// <summary>Counts an admitted request (under the group's lock).</summary>
    public void CountAdmitted() => _admitted++;

    public override RateLimiterStatistics? GetStatistics(ThrottleRequest resource) => Group.Statistics(this, resource.Direction, _admitted);

    protected override RateLimitLease AttemptAcquireCore(ThrottleRequest resource, int permitCount) =>
        Group.TryAdmit(this, resource.Direction, resource.Bytes, permitCount) ? ThrottleLease.Admitted : ThrottleLease.NotAdmitted;

    protected override ValueTask<RateLimitLease> AcquireAsyncCore(ThrottleRequest resource, int permitCount, CancellationToken cancellationToken) =>
        Group.AcquireAsync(this, resource.Direction, resource.Bytes, permitCount, cancellationToken);

    protected override void Dispose(bool disposing)
    {
        if (disposing) Group.Leave(this);
        base.Dispose(disposing);
    }
}
