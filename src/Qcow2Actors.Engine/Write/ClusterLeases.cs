namespace Qcow2Actors.Engine.Write;

/// <summary>
/// Leases on host clusters that a write is writing outside its L2 table actor (the lock-free
/// in-place fast path of <see cref="Qcow2Image"/>). A discard, a write of zeroes or a
/// copy-on-write may drop the mapping of such a cluster while the write is still in flight;
/// the cluster is then freed, and once the freeing is durable its space is punched and it may
/// be allocated again. Both of those wait here until every lease on the cluster is returned,
/// so a write that started before the discard can never land in data someone else wrote later.
/// </summary>
/// <remarks>
/// The fast path takes its lease and only then checks that the mapping it found is still the
/// published one: a discard that published first is seen (the write goes to the table actor
/// instead), and one that publishes later releases its clusters only after a flush, by which
/// time the lease is visible here.
/// </remarks>
internal sealed class ClusterLeases
{
    private readonly object _lock = new();
    private readonly List<Lease> _held = new();
    private readonly List<(long[] Clusters, TaskCompletionSource Done)> _waiters = new();
    private readonly TaskCompletionSource _firstWait = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>One lease on the host clusters [<see cref="First"/>, <see cref="End"/>); dispose to return it.</summary>
    public sealed class Lease : IDisposable
    {
        private readonly ClusterLeases _owner;

        internal Lease(ClusterLeases owner, long first, long end)
        {
            _owner = owner;
            First = first;
            End = end;
        }

        /// <summary>First leased cluster.</summary>
        public long First { get; }

        /// <summary>One past the last leased cluster.</summary>
        public long End { get; }

        /// <summary>Returns the lease (idempotent).</summary>
        public void Dispose() => _owner.Return(this);
    }

    /// <summary>Leases the clusters <paramref name="hostOffset"/>..+<paramref name="length"/> touch.</summary>
    public Lease Acquire(long hostOffset, long length, int clusterBits)
    {
        var lease = new Lease(this, hostOffset >> clusterBits, ((hostOffset + length - 1) >> clusterBits) + 1);
        lock (_lock) _held.Add(lease);
        return lease;
    }

    /// <summary>Leases held now (tests and diagnostics).</summary>
    public int Count
    {
        get { lock (_lock) return _held.Count; }
    }

    /// <summary>Completes the first time a release of freed clusters had to wait for a lease (tests).</summary>
    public Task FirstWait => _firstWait.Task;

    /// <summary>Completes once no lease covers any of <paramref name="clusters"/>.</summary>
    public Task WhenFree(long[] clusters)
    {
        lock (_lock)
        {
            if (!AnyLeased(clusters)) return Task.CompletedTask;
            var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Add((clusters, done));
            _firstWait.TrySetResult();
            return done.Task;
        }
    }

    private void Return(Lease lease)
    {
        List<TaskCompletionSource>? ready = null;
        lock (_lock)
        {
            if (!_held.Remove(lease)) return;
            for (int i = _waiters.Count - 1; i >= 0; i--)
            {
                if (AnyLeased(_waiters[i].Clusters)) continue;
                (ready ??= new()).Add(_waiters[i].Done);
                _waiters.RemoveAt(i);
            }
        }
        if (ready is not null) foreach (var d in ready) d.TrySetResult();
    }

    private bool AnyLeased(long[] clusters)
    {
        foreach (var lease in _held)
            foreach (var c in clusters)
                if (c >= lease.First && c < lease.End) return true;
        return false;
    }
}
