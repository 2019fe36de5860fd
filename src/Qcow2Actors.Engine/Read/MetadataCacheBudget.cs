using System.Collections.Concurrent;

namespace Qcow2Actors.Engine.Read;

/// <summary>
/// One memory budget for the L2 metadata of every image an <see cref="ImageHost"/> opens
/// (HOCON <c>qcow2actors.host.metadata-cache</c>): parsed L2 tables in the images' caches and the
/// tables held by live L2 table actors. The one owner of the count: caches and image actors charge
/// and release through their image's <see cref="Account"/>.
/// </summary>
/// <remarks>
/// When a charge would pass the limit, the least recently used cached tables across all images are
/// dropped (clean ones: they are on disk and read again on demand), down to a sixteenth below the
/// limit. If that is not enough, images holding more than their floor of table actors are asked to
/// shed (<see cref="Account.OnShed"/>): their image actor passivates its least recently used clean
/// table actors and checkpoints when dirty tables hold the memory (a dirty table is written back
/// before it goes, through the normal passivation path). Meanwhile a loaded table that finds no room
/// is used without being cached, and an image that needs a new table actor holds that request until
/// room is made (<see cref="Account.OnRoom"/>). Fairness: every image keeps its
/// <see cref="FloorTables"/> most recently used cached tables and may always run that many table
/// actors, so a busy neighbour can never starve it to nothing; the floors are the only memory that
/// can pass the limit (at most images × <see cref="FloorTables"/> × two tables).
/// </remarks>
internal sealed class MetadataCacheBudget
{
    /// <summary>Cached tables and table actors each image keeps whatever the budget.</summary>
    public const int FloorTables = 4;

    /// <summary>What a live table actor is charged beyond its two tables (actor, mailbox, bookkeeping).</summary>
    public const int TableActorOverhead = 1024;

    /// <summary>What one cached table of <paramref name="clusterSize"/> bytes is charged (<see cref="L2View.SizeInBytes"/>).</summary>
    public static long ViewBytes(long clusterSize) => clusterSize + 48;

    /// <summary>What a live table actor is charged: its working copy of the table, the view it publishes, and its overhead.</summary>
    public static long ActorBytes(long clusterSize) => 2 * ViewBytes(clusterSize) + TableActorOverhead;

    /// <summary>
    /// The most one image holds whatever the budget: its floor of table actors, its floor of cached
    /// tables, and a cached copy of each floor actor's table that turned dirty. A budget at least
    /// images × this is never passed.
    /// </summary>
    public static long FloorBytes(long clusterSize) => FloorTables * (ActorBytes(clusterSize) + 2 * ViewBytes(clusterSize));

    private readonly ConcurrentDictionary<Account, byte> _accounts = new();
    private readonly ConcurrentDictionary<Account, byte> _waiting = new();
    private readonly object _trimLock = new();
    private long _used;
    private long _peak;

    public MetadataCacheBudget(long limitBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(limitBytes);
        LimitBytes = limitBytes;
    }

    /// <summary>The budget in bytes.</summary>
    public long LimitBytes { get; }

    /// <summary>Bytes of cached tables and table actors now.</summary>
    public long UsedBytes => Volatile.Read(ref _used);

    /// <summary>The most <see cref="UsedBytes"/> has been since the budget was made (or <see cref="ResetPeak"/>).</summary>
    public long PeakBytes => Volatile.Read(ref _peak);

    /// <summary>Images (layers) charging this budget now.</summary>
    public int Images => _accounts.Count;

    /// <summary>Starts the peak over from what is used now.</summary>
    public void ResetPeak() => Volatile.Write(ref _peak, UsedBytes);

    /// <summary>The account of one image layer (its L2 cache and, for a write open, its table actors).</summary>
    public Account Register(string name)
    {
        var account = new Account(this, name);
        _accounts[account] = 0;
        return account;
    }

    private bool AnyAboveFloor()
    {
        foreach (var account in _accounts.Keys)
            if (account.TableActors > FloorTables && !account.Stuck) return true;
        return false;
    }

    private bool TryCharge(long bytes)
    {
        while (true)
        {
            long used = Volatile.Read(ref _used);
            if (used + bytes > LimitBytes) return false;
            if (Interlocked.CompareExchange(ref _used, used + bytes, used) == used)
            {
                RaisePeak(used + bytes);
                return true;
            }
        }
    }

    private void Charge(long bytes) => RaisePeak(Interlocked.Add(ref _used, bytes));

    private void Release(long bytes)
    {
        Interlocked.Add(ref _used, -bytes);
        if (!_waiting.IsEmpty) WakeWaiting();
    }

    private void RaisePeak(long used)
    {
        long peak;
        while (used > (peak = Volatile.Read(ref _peak)) && Interlocked.CompareExchange(ref _peak, used, peak) != peak) { }
    }

    // Wakes the waiting images whose request fits now.
    private void WakeWaiting()
    {
        foreach (var account in _waiting.Keys)
            if (UsedBytes + account.Needed <= LimitBytes && _waiting.TryRemove(account, out _)) account.Wake();
    }

    /// <summary>
    /// Brings usage a sixteenth below the limit less <paramref name="needed"/>: drops the least recently
    /// used clean cached tables of all images (each keeping its floor), then asks images with more table
    /// actors than their floor to shed, least recently active first. One trim at a time: a caller that
    /// finds one running waits for it and then finds the room it made.
    /// </summary>
    /// <remarks>Callers hold no cache's lock (this takes them).</remarks>
    public void MakeRoom(long needed)
    {
        lock (_trimLock)
        {
            long target = Math.Max(0, LimitBytes - LimitBytes / 16 - needed);
            if (UsedBytes <= target) return;
            var candidates = new List<L2Cache.Evictable>();
            foreach (var account in _accounts.Keys) account.Cache?.CollectEvictable(FloorTables, candidates);
            candidates.Sort(static (a, b) => a.Stamp.CompareTo(b.Stamp));
            foreach (var candidate in candidates)
            {
                if (UsedBytes <= target) return;
                candidate.Cache.TryEvict(candidate);
            }
            long deficit = UsedBytes - target;
            if (deficit <= 0) return;
            foreach (var account in _accounts.Keys.Where(a => a.TableActors > FloorTables).OrderBy(a => a.LastActive))
            {
                if (deficit <= 0) break;
                deficit -= account.Shed();
            }
        }
    }

    /// <summary>
    /// One image layer's share: the bytes it has charged (so closing it gives back exactly those) and
    /// how many table actors it runs. Thread-safe: its cache charges from reader threads, its image
    /// actor from its own.
    /// </summary>
    internal sealed class Account
    {
        private readonly MetadataCacheBudget _budget;
        private readonly object _lock = new();
        private long _bytes;
        private int _actors;
        private int _shedPending;
        private long _needed;
        private bool _closed;

        public Account(MetadataCacheBudget budget, string name)
        {
            _budget = budget;
            Name = name;
        }

        public string Name { get; }

        public MetadataCacheBudget Budget => _budget;

        /// <summary>The cache charging this account (set once by <see cref="L2Cache.Attach"/>).</summary>
        public L2Cache? Cache { get; set; }

        /// <summary>Bytes this layer holds charged now.</summary>
        public long Bytes
        {
            get { lock (_lock) return _bytes; }
        }

        /// <summary>Live table actors of this image.</summary>
        public int TableActors => Volatile.Read(ref _actors);

        /// <summary>When the image last routed a request to a table actor (Environment.TickCount64).</summary>
        public long LastActive { get; private set; }

        /// <summary>Called (from any thread) when the budget asks the image to shed table actors; post to the image actor.</summary>
        public Action? OnShed { get; set; }

        /// <summary>Called (from any thread) when room was made after <see cref="WaitForRoom"/>; post to the image actor.</summary>
        public Action? OnRoom { get; set; }

        /// <summary>Charges a table about to be cached; false (nothing charged) when there is no room even after trimming.</summary>
        public bool TryAdmitTable(long bytes)
        {
            if (TryCharge(bytes)) return true;
            _budget.MakeRoom(bytes);
            return TryCharge(bytes);
        }

        /// <summary>
        /// Charges a table whatever the limit (a writer publishing the only current copy of its table),
        /// after making room for it if it can be made.
        /// </summary>
        public void ChargeTable(long bytes)
        {
            if (TryAdmitTable(bytes)) return;
            Force(bytes);
        }

        private void Force(long bytes)
        {
            lock (_lock)
            {
                if (_closed) return;
                _bytes += bytes;
                _budget.Charge(bytes);
            }
        }

        /// <summary>A cached table went.</summary>
        public void ReleaseTable(long bytes) => Release(bytes);

        /// <summary>
        /// Charges a new table actor: always within the image's floor, else only if there is room
        /// (after trimming). False: hold the request and <see cref="WaitForRoom"/>.
        /// </summary>
        public bool TryAdmitActor(long bytes)
        {
            LastActive = Environment.TickCount64;
            bool admitted = TryAdmitTable(bytes);
            if (!admitted && TableActors < FloorTables && !_budget.AnyAboveFloor())
            {
                // Within its floor an image always gets its table actor: while a neighbour holds more than
                // its floor, that neighbour sheds (asked by TryAdmitTable) and this image waits for the room;
                // when none does, only the floors are left and this one is charged past the budget.
                Force(bytes);
                admitted = true;
            }
            if (admitted) Interlocked.Increment(ref _actors);
            return admitted;
        }

        /// <summary>A table actor stopped.</summary>
        public void ReleaseActor(long bytes)
        {
            Interlocked.Decrement(ref _actors);
            Release(bytes);
        }

        /// <summary>The image routed a request to a live table actor.</summary>
        public void Touch() => LastActive = Environment.TickCount64;

        /// <summary>
        /// Asks to be woken (<see cref="OnRoom"/>) once <paramref name="needed"/> bytes fit under the
        /// limit; wakes at once if they already do.
        /// </summary>
        public void WaitForRoom(long needed)
        {
            Volatile.Write(ref _needed, needed);
            _budget._waiting[this] = 0;
            _budget.WakeWaiting();
        }

        internal long Needed => Volatile.Read(ref _needed);

        /// <summary>
        /// True once the image turned read-only: its dirty tables can never be written back, so images
        /// below their floor no longer wait for it to shed (they take their floor past the budget).
        /// </summary>
        public bool Stuck { get; private set; }

        /// <summary>The image cannot shed its dirty tables any more (<see cref="Stuck"/>); waiting images retry.</summary>
        public void MarkStuck()
        {
            if (Stuck) return;
            Stuck = true;
            foreach (var account in _budget._waiting.Keys)
                if (_budget._waiting.TryRemove(account, out _)) account.Wake();
        }

        /// <summary>The image actor handled a shed request: the next one may be sent.</summary>
        public void ShedDone() => Volatile.Write(ref _shedPending, 0);

        internal void Wake() => OnRoom?.Invoke();

        // Asks the image to shed (once until it has handled it); returns the bytes that may come back.
        internal long Shed()
        {
            if (OnShed is not { } shed || Interlocked.Exchange(ref _shedPending, 1) != 0) return 0;
            shed();
            long perActor = Cache is { } c ? c.TableBytes + TableActorOverhead : 0;
            return Math.Max(0, TableActors - FloorTables) / 2 * perActor;
        }

        private bool TryCharge(long bytes)
        {
            lock (_lock)
            {
                if (_closed) return true; // a closed layer charges nothing
                if (!_budget.TryCharge(bytes)) return false;
                _bytes += bytes;
                return true;
            }
        }

        private void Release(long bytes)
        {
            lock (_lock)
            {
                if (_closed) return;
                bytes = Math.Min(bytes, _bytes);
                _bytes -= bytes;
            }
            _budget.Release(bytes);
        }

        /// <summary>The layer closed: everything it charged goes back and it leaves the budget.</summary>
        public void Close()
        {
            long bytes;
            lock (_lock)
            {
                if (_closed) return;
                _closed = true;
                bytes = _bytes;
                _bytes = 0;
            }
            _budget._accounts.TryRemove(this, out _);
            _budget._waiting.TryRemove(this, out _);
            _budget.Release(bytes);
        }
    }
}
