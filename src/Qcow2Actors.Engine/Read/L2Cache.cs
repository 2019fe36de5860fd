using System.Collections.Concurrent;

namespace Qcow2Actors.Engine.Read;

/// <summary>
/// Parsed L2 tables keyed by their host offset, shared by every reader of one image (the
/// active L1 and snapshot L1s alike: a table shared with a snapshot is never changed in place,
/// the writer copies it first, so its host offset always names one content).
/// Readers call <see cref="GetOrLoadAsync"/>; the writer calls <see cref="Publish"/> after it
/// changes a table (so readers see the new entries without a disk read) and
/// <see cref="Invalidate"/> when a table's cluster is freed. Bounded: least recently used
/// tables are dropped once more than <see cref="Capacity"/> are held.
/// </summary>
internal sealed class L2Cache
{
    /// <summary>Default number of tables kept: 1024 tables of 64 KiB cover 512 GiB of guest space.</summary>
    public const int DefaultCapacity = 1024;

    private sealed class Slot(L2View view, long tick)
    {
        public readonly L2View View = view;
        public long LastUse = tick;
    }

    private readonly ConcurrentDictionary<long, Slot> _slots = new();
    private readonly ConcurrentDictionary<long, Task<L2View>> _loading = new();
    // Tables the writer changed and has not yet written in place: their only copy is here,
    // so eviction must never drop them (a reader would load the stale table from disk).
    private readonly ConcurrentDictionary<long, byte> _pinned = new();
    private readonly object _evictLock = new();
    private long _clock;
    // Bumped by every Publish/Invalidate: a disk load that started before a change must not
    // overwrite what the writer published while it was in flight.
    private long _generation;

    public L2Cache(int capacity = DefaultCapacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        Capacity = capacity;
    }

    public int Capacity { get; }
    public int Count => _slots.Count;

    /// <summary>
    /// Changes whenever a table is looked up, loaded or published: the owner compares it over time
    /// to tell an idle image (see <see cref="DropUnpinned"/>).
    /// </summary>
    public long Activity => Volatile.Read(ref _clock);

    /// <summary>Lock-free lookup; refreshes the table's recency.</summary>
    public bool TryGet(long hostOffset, out L2View view)
    {
        if (_slots.TryGetValue(hostOffset, out var slot))
        {
            slot.LastUse = Interlocked.Increment(ref _clock);
            view = slot.View;
            return true;
        }
        view = null!;
        return false;
    }

    /// <summary>
    /// The cached table, or one loaded by <paramref name="load"/>; concurrent misses on the same
    /// table share one load.
    /// </summary>
    public ValueTask<L2View> GetOrLoadAsync(long hostOffset, Func<long, CancellationToken, Task<L2View>> load, CancellationToken cancellationToken)
    {
        if (TryGet(hostOffset, out var view)) return new ValueTask<L2View>(view);
        return new ValueTask<L2View>(LoadAsync(hostOffset, load, cancellationToken));
    }

    private async Task<L2View> LoadAsync(long hostOffset, Func<long, CancellationToken, Task<L2View>> load, CancellationToken cancellationToken)
    {
        while (true)
        {
            long generation = Volatile.Read(ref _generation);
            var tcs = new TaskCompletionSource<L2View>(TaskCreationOptions.RunContinuationsAsynchronously);
            var task = _loading.GetOrAdd(hostOffset, tcs.Task);
            if (task != tcs.Task)
            {
                var shared = await task.WaitAsync(cancellationToken).ConfigureAwait(false);
                if (TryGet(hostOffset, out var published)) return published;
                return shared;
            }
            try
            {
                var loaded = await load(hostOffset, cancellationToken).ConfigureAwait(false);
                if (Volatile.Read(ref _generation) == generation)
                {
                    _slots.TryAdd(hostOffset, new Slot(loaded, Interlocked.Increment(ref _clock)));
                    EvictIfNeeded();
                }
                tcs.SetResult(loaded);
                if (TryGet(hostOffset, out var current)) return current;
                if (Volatile.Read(ref _generation) != generation) continue; // changed under us: load again
                return loaded;
            }
            catch (Exception ex)
            {
                tcs.SetException(ex);
                throw;
            }
            finally
            {
                _loading.TryRemove(new KeyValuePair<long, Task<L2View>>(hostOffset, tcs.Task));
            }
        }
    }

    /// <summary>Writer side: true when <paramref name="view"/> is the one cached for <paramref name="hostOffset"/> (no recency update).</summary>
    public bool IsCurrent(long hostOffset, L2View view) =>
        _slots.TryGetValue(hostOffset, out var slot) && ReferenceEquals(slot.View, view);

    /// <summary>Writer side: makes <paramref name="view"/> the table every later read sees.</summary>
    public void Publish(L2View view)
    {
        Interlocked.Increment(ref _generation);
        _slots[view.HostOffset] = new Slot(view, Interlocked.Increment(ref _clock));
        EvictIfNeeded();
    }

    /// <summary>Keeps the table at <paramref name="hostOffset"/> in the cache until <see cref="Unpin"/>.</summary>
    /// <remarks>
    /// Under the trimming lock: a table is pinned before the writer changes entries in a view it may
    /// already have published, so a trim that found the table unpinned must have removed it before
    /// then, and the writer, finding its view no longer cached, publishes it again.
    /// </remarks>
    public void Pin(long hostOffset)
    {
        lock (_evictLock) _pinned[hostOffset] = 0;
    }

    /// <summary>The table is on disk again: it may be evicted.</summary>
    public void Unpin(long hostOffset) => _pinned.TryRemove(hostOffset, out _);

    /// <summary>Number of pinned (dirty) tables.</summary>
    public int PinnedCount => _pinned.Count;

    /// <summary>Writer side: forgets a table (its cluster was freed or rewritten outside the cache).</summary>
    public void Invalidate(long hostOffset)
    {
        Interlocked.Increment(ref _generation);
        _slots.TryRemove(hostOffset, out _);
    }

    /// <summary>
    /// Forgets every table that is on disk (all but the pinned ones), giving an idle image's memory
    /// back; readers load them again on demand. As safe as eviction, which drops the same tables.
    /// </summary>
    public void DropUnpinned()
    {
        lock (_evictLock)
        {
            foreach (var slot in _slots)
                if (!_pinned.ContainsKey(slot.Key)) _slots.TryRemove(slot);
        }
    }

    /// <summary>Forgets every table.</summary>
    public void Clear()
    {
        Interlocked.Increment(ref _generation);
        _slots.Clear();
    }

    private void EvictIfNeeded()
    {
        // Pinned (dirty) tables cannot go; only look when enough of the rest could.
        if (_slots.Count - _pinned.Count <= Capacity) return;
        if (!Monitor.TryEnter(_evictLock)) return; // someone else is already trimming
        try
        {
            int excess = _slots.Count - Capacity;
            if (excess <= 0) return;
            // Trim an eighth below capacity at once so the sort is amortised over many inserts.
            int drop = excess + Capacity / 8;
            var victims = _slots.ToArray();
            Array.Sort(victims, static (a, b) => a.Value.LastUse.CompareTo(b.Value.LastUse));
            for (int i = 0, dropped = 0; dropped < drop && i < victims.Length; i++)
            {
                if (_pinned.ContainsKey(victims[i].Key)) continue;
                if (_slots.TryRemove(victims[i])) dropped++;
            }
        }
        finally
        {
            Monitor.Exit(_evictLock);
        }
    }
}
