using System.Threading.RateLimiting;

namespace Qcow2Actors.Nbd.Throttling;

/// <summary>
/// Serves another export through one or more <see cref="ThrottleGroup"/>s: each read, write,
/// write-zeroes and trim waits until every group admits it, in the order the groups are given (for
/// example the export's own group, then its tenant's shared group). Flush and block status pass
/// straight through, as in QEMU. The groups can be swapped while clients stay connected.
/// </summary>
/// <remarks>
/// A request's wait ends early when its cancellation token fires (the client hung up, or the server
/// aborts): it then leaves the queue and is never charged. The time each request waited is recorded
/// in the <c>q2a.nbd.throttle.delay</c> histogram (seconds, tag <c>export</c>) on the
/// "Qcow2Actors.Nbd" meter. Disposing leaves the groups; it does not dispose <see cref="Inner"/>.
/// </remarks>
public sealed class ThrottledExport : INbdExport, IDisposable
{
    private readonly INbdExport _inner;
    private readonly Lock _groupsLock = new();
    // The delay histogram's tags: the export and its own (the host's tenant), built once.
    private readonly KeyValuePair<string, object?>[] _delayTags;
    private ThrottleMember[] _members;
    private bool _disposed;

    /// <summary>Serves <paramref name="inner"/> under its name, throttled by <paramref name="groups"/> (none: unthrottled).</summary>
    public ThrottledExport(INbdExport inner, params ThrottleGroup[] groups)
    {
        ArgumentNullException.ThrowIfNull(inner);
        ArgumentNullException.ThrowIfNull(groups);
        _inner = inner;
        _delayTags = [new("export", inner.Name), .. inner.MetricTags.Where(t => t.Key != "export")];
        _members = Join(Distinct(groups));
    }

    /// <summary>The export served.</summary>
    public INbdExport Inner => _inner;

    /// <summary>The groups every throttled request passes, in order.</summary>
    public IReadOnlyList<ThrottleGroup> Groups => Volatile.Read(ref _members).Select(m => m.Group).ToArray();

    /// <inheritdoc/>
    public string Name => _inner.Name;

    /// <inheritdoc/>
    public string? Description => _inner.Description;

    /// <inheritdoc />
    /// <remarks>The wrapped export's tags (the host's tenant), so throttling does not change what metrics carry.</remarks>
    public IReadOnlyList<KeyValuePair<string, object?>> MetricTags => _inner.MetricTags;

    /// <inheritdoc/>
    public string? Tenant => _inner.Tenant;

    /// <inheritdoc/>
    public long Size => _inner.Size;

    /// <inheritdoc/>
    public bool IsReadOnly => _inner.IsReadOnly;

    /// <summary>
    /// Replaces the groups while the export is served. Requests waiting in a group that is dropped
    /// move on to the new groups at once (ones already admitted by a group that stays are not charged
    /// twice); new requests see only the new groups.
    /// </summary>
    public void SetGroups(params ThrottleGroup[] groups)
    {
        ArgumentNullException.ThrowIfNull(groups);
        var wanted = Distinct(groups);
        ThrottleMember[] old;
        lock (_groupsLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            old = _members;
            var next = new ThrottleMember[wanted.Length];
            for (int i = 0; i < wanted.Length; i++)
                next[i] = Array.Find(old, m => m.Group == wanted[i]) ?? wanted[i].Join(Name);
            Volatile.Write(ref _members, next);
        }
        // Outside the lock: leaving answers the dropped groups' waiters, whose continuations re-read _members.
        foreach (var member in old)
        {
            if (!wanted.Contains(member.Group)) member.Dispose();
        }
    }

    /// <inheritdoc/>
    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        var admitted = Admit(ThrottleDirection.Read, buffer.Length, cancellationToken);
        return admitted.IsCompletedSuccessfully
            ? _inner.ReadAsync(offset, buffer, cancellationToken)
            : ReadAfter(admitted, offset, buffer, cancellationToken);
    }

    /// <inheritdoc/>
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken)
    {
        var admitted = Admit(ThrottleDirection.Write, data.Length, cancellationToken);
        return admitted.IsCompletedSuccessfully
            ? _inner.WriteAsync(offset, data, fua, cancellationToken)
            : WriteAfter(admitted, offset, data, fua, cancellationToken);
    }

    /// <inheritdoc/>
    /// <remarks>
    /// A write admitted at once goes on to the inner export's <see cref="INbdExport.WriteInlineAsync"/> on this thread;
    /// one that waited for its share goes on as <see cref="WriteAsync"/> does, from wherever the wait ended.
    /// </remarks>
    public ValueTask WriteInlineAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        var admitted = Admit(ThrottleDirection.Write, data.Length, cancellationToken);
        return admitted.IsCompletedSuccessfully
            ? _inner.WriteInlineAsync(offset, data, cancellationToken)
            : WriteAfter(admitted, offset, data, fua: false, cancellationToken);
    }

    /// <inheritdoc/>
    /// <remarks>Charged as a write of <paramref name="length"/> bytes, as QEMU's throttle filter charges zero writes.</remarks>
    public async ValueTask WriteZeroesAsync(long offset, long length, bool mayUnmap, bool fastZero, bool fua, CancellationToken cancellationToken)
    {
        await Admit(ThrottleDirection.Write, length, cancellationToken).ConfigureAwait(false);
        await _inner.WriteZeroesAsync(offset, length, mayUnmap, fastZero, fua, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc/>
    /// <remarks>Charged as a write of <paramref name="length"/> bytes, as QEMU's throttle filter charges discards.</remarks>
    public async ValueTask TrimAsync(long offset, long length, bool fua, CancellationToken cancellationToken)
    {
        await Admit(ThrottleDirection.Write, length, cancellationToken).ConfigureAwait(false);
        await _inner.TrimAsync(offset, length, fua, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc/>
    /// <remarks>Not throttled (QEMU does not throttle flushes).</remarks>
    public ValueTask FlushAsync(CancellationToken cancellationToken) => _inner.FlushAsync(cancellationToken);

    /// <inheritdoc/>
    /// <remarks>Not throttled (QEMU does not throttle block status).</remarks>
    public ValueTask<IReadOnlyList<NbdExtent>> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken) =>
        _inner.GetBlockStatusAsync(offset, length, cancellationToken);

    /// <inheritdoc/>
    public bool AllocationDepth => _inner.AllocationDepth;

    /// <inheritdoc/>
    public IReadOnlyList<string> DirtyBitmaps => _inner.DirtyBitmaps;

    /// <inheritdoc/>
    /// <remarks>Not throttled, as block status.</remarks>
    public ValueTask<IReadOnlyList<NbdMetaExtent>> GetAllocationDepthAsync(long offset, long length, CancellationToken cancellationToken) =>
        _inner.GetAllocationDepthAsync(offset, length, cancellationToken);

    /// <inheritdoc/>
    /// <remarks>Not throttled, as block status.</remarks>
    public ValueTask<IReadOnlyList<NbdMetaExtent>> GetDirtyBitmapAsync(string bitmap, long offset, long length, CancellationToken cancellationToken) =>
        _inner.GetDirtyBitmapAsync(bitmap, offset, length, cancellationToken);

    /// <summary>Leaves every group; requests still waiting go through unthrottled. <see cref="Inner"/> stays open.</summary>
    public void Dispose()
    {
        ThrottleMember[] members;
        lock (_groupsLock)
        {
            if (_disposed) return;
            _disposed = true;
            members = _members;
            Volatile.Write(ref _members, []);
        }
        foreach (var member in members) member.Dispose();
    }

    /// <summary>Completes when every group admitted the request; synchronously (and without allocating) when none made it wait.</summary>
    private ValueTask Admit(ThrottleDirection direction, long bytes, CancellationToken cancellationToken)
    {
        var members = Volatile.Read(ref _members);
        var request = new ThrottleRequest(direction, bytes);
        for (int i = 0; i < members.Length; i++)
        {
            if (!members[i].AttemptAcquire(request).IsAcquired) return WaitAsync(request, members, i, cancellationToken);
        }
        if (members.Length > 0 && ThrottleMetrics.Delay.Enabled) ThrottleMetrics.Delay.Record(0, _delayTags);
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// The slow path: waits in <paramref name="members"/> from <paramref name="from"/> on, then in any
    /// group <see cref="SetGroups"/> added meanwhile; a group dropped meanwhile answers "not admitted"
    /// and is skipped.
    /// </summary>
    private async ValueTask WaitAsync(ThrottleRequest request, ThrottleMember[] members, int from, CancellationToken cancellationToken)
    {
        var passed = new List<ThrottleGroup>(members.Length);
        for (int i = 0; i < from; i++) passed.Add(members[i].Group);
        double waited = 0;
        while (true)
        {
            foreach (var member in members)
            {
                if (passed.Contains(member.Group)) continue;
                long start = member.Group.TimeProvider.GetTimestamp();
                var lease = await member.AcquireAsync(request, 1, cancellationToken).ConfigureAwait(false);
                waited += member.Group.TimeProvider.GetElapsedTime(start).TotalSeconds;
                // Not admitted: the export left this group while waiting; the current groups decide.
                if (lease.IsAcquired) passed.Add(member.Group);
            }
            var current = Volatile.Read(ref _members);
            if (ReferenceEquals(current, members)) break;
            members = current;
        }
        if (ThrottleMetrics.Delay.Enabled) ThrottleMetrics.Delay.Record(waited, _delayTags);
    }

    private async ValueTask ReadAfter(ValueTask admitted, long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        await admitted.ConfigureAwait(false);
        await _inner.ReadAsync(offset, buffer, cancellationToken).ConfigureAwait(false);
    }

    private async ValueTask WriteAfter(ValueTask admitted, long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken)
    {
        await admitted.ConfigureAwait(false);
        await _inner.WriteAsync(offset, data, fua, cancellationToken).ConfigureAwait(false);
    }

    private ThrottleMember[] Join(ThrottleGroup[] groups)
    {
        var members = new ThrottleMember[groups.Length];
        for (int i = 0; i < groups.Length; i++) members[i] = groups[i].Join(Name);
        return members;
    }

    private static ThrottleGroup[] Distinct(ThrottleGroup[] groups)
    {
        foreach (var group in groups) ArgumentNullException.ThrowIfNull(group, nameof(groups));
        return groups.Distinct().ToArray();
    }
}
