using System.Collections.Concurrent;
using System.Diagnostics;

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
        // When it was last used, comparable across images (Stopwatch timestamp): kept only with a budget.
        public long Stamp = Stopwatch.GetTimestamp();
        // Published by a live table actor, whose budget charge covers it (the cache's own charge does not).
        public bool Reserved;
    }

    /// <summary>A cached table the host's metadata budget may drop (<see cref="CollectEvictable"/>).</summary>
    internal readonly record struct Evictable(L2Cache Cache, long Key, object Slot, long Stamp);

    // The host-wide metadata budget's account of this cache (null: none, or not attached yet).
    private MetadataCacheBudget.Account? _account;

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

    /// <summary>The host's metadata budget account this cache charges (null without one).</summary>
    public MetadataCacheBudget.Account? Account => _account;

    /// <summary>Bytes of one table (a cluster), for the budget's estimates.</summary>
    public long TableBytes { get; private set; }

    /// <summary>
    /// Charges every table cached from now on (and those cached already) to <paramref name="account"/>:
    /// a loaded table finds room or is used uncached, and the budget may drop this cache's clean tables.
    /// </summary>
    public void Attach(MetadataCacheBudget.Account account, long tableBytes)
    {
        TableBytes = tableBytes;
        account.Cache = this;
        long bytes = 0;
        lock (_evictLock)
        {
            _account = account;
            foreach (var slot in _slots.Values) bytes += slot.View.SizeInBytes;
        }
        // Outside the lock: making room takes the locks of other caches.
        if (bytes > 0) account.ChargeTable(bytes);
    }

    /// <summary>The layer closed: whatever this cache charged goes back (the cache is not used again).</summary>
    public void Detach() => _account?.Close();

    private void Removed(Slot slot)
    {
        if (!slot.Reserved) _account?.ReleaseTable(slot.View.SizeInBytes);
    }

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
            if (_account is not null) slot.Stamp = Stopwatch.GetTimestamp();
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
                // With a host budget that has no room even after trimming, the table is used uncached.
                if (Volatile.Read(ref _generation) == generation && (_account is not { } account || account.TryAdmitTable(loaded.SizeInBytes)))
                {
                    if (_slots.TryAdd(hostOffset, new Slot(loaded, Interlocked.Increment(ref _clock)))) EvictIfNeeded();
                    else _account?.ReleaseTable(loaded.SizeInBytes);
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

    /// <summary>
    /// Writer side: makes <paramref name="view"/> the table every later read sees. With a budget, a table
    /// not cached before is charged to the writer's table actor (which was charged for it when it
    /// started), so a writer never waits for room; <see cref="Adopt"/> moves it to the cache when the actor stops.
    /// </summary>
    public void Publish(L2View view)
    {
        Interlocked.Increment(ref _generation);
        long tick = Interlocked.Increment(ref _clock);
        while (true)
        {
            if (_slots.TryGetValue(view.HostOffset, out var old))
            {
                // A new version of the same table (same size): whoever paid for it still does.
                if (_slots.TryUpdate(view.HostOffset, new Slot(view, tick) { Reserved = old.Reserved }, old)) break;
                continue;
            }
            if (_slots.TryAdd(view.HostOffset, new Slot(view, tick) { Reserved = _account is not null })) break;
        }
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
        if (_slots.TryRemove(hostOffset, out var removed)) Removed(removed);
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
                if (!_pinned.ContainsKey(slot.Key) && _slots.TryRemove(slot)) Removed(slot.Value);
        }
    }

    /// <summary>Forgets every table.</summary>
    public void Clear()
    {
        Interlocked.Increment(ref _generation);
        foreach (var slot in _slots)
            if (_slots.TryRemove(slot)) Removed(slot.Value);
    }

    /// <summary>
    /// The table actor that published the table at <paramref name="hostOffset"/> stopped: the cache
    /// takes over its charge if the budget has room, else the (clean) table is dropped.
    /// </summary>
    public void Adopt(long hostOffset)
    {
        if (_account is not { } account || !_slots.TryGetValue(hostOffset, out var slot) || !slot.Reserved) return;
        if (account.TryAdmitTable(slot.View.SizeInBytes))
        {
            var adopted = new Slot(slot.View, slot.LastUse) { Stamp = slot.Stamp };
            if (!_slots.TryUpdate(hostOffset, adopted, slot)) account.ReleaseTable(slot.View.SizeInBytes);
            return;
        }
        lock (_evictLock)
        {
            if (!_pinned.ContainsKey(hostOffset)) _slots.TryRemove(new KeyValuePair<long, Slot>(hostOffset, slot));
        }
    }

    /// <summary>
    /// Adds to <paramref name="into"/> the tables the host budget may drop from this cache: every clean
    /// (unpinned) table it pays for but the <paramref name="floor"/> most recently used.
    /// </summary>
    public void CollectEvictable(int floor, List<Evictable> into)
    {
        var clean = new List<Evictable>();
        foreach (var slot in _slots)
            if (!_pinned.ContainsKey(slot.Key) && !slot.Value.Reserved) clean.Add(new Evictable(this, slot.Key, slot.Value, slot.Value.Stamp));
        if (clean.Count <= floor) return;
        clean.Sort(static (a, b) => b.Stamp.CompareTo(a.Stamp));
        into.AddRange(clean.Skip(floor));
    }

    /// <summary>Drops a table <see cref="CollectEvictable"/> offered, unless it was pinned or replaced since.</summary>
    public bool TryEvict(Evictable candidate)
    {
        var slot = (Slot)candidate.Slot;
        lock (_evictLock)
        {
            if (_pinned.ContainsKey(candidate.Key) || !_slots.TryRemove(new KeyValuePair<long, Slot>(candidate.Key, slot))) return false;
        }
        Removed(slot);
        return true;
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
                if (_slots.TryRemove(victims[i]))
                {
                    dropped++;
                    Removed(victims[i].Value);
                }
            }
        }
        finally
        {
            Monitor.Exit(_evictLock);
        }
    }
}
