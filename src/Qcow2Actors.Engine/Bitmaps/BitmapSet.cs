using Qcow2Actors.Engine.Device;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Bitmaps;

/// <summary>
/// The persistent dirty bitmaps of one open image. Read-only opens read a bitmap's bits from the
/// image the first time they are asked for. Read-write opens load every enabled, consistent bitmap
/// at open and track it: writers only set bits (<see cref="Mark"/>, lock-free); everything else
/// (what the directory says, storing, adding and removing bitmaps) belongs to the image actor,
/// which publishes a new immutable list of entries after each change.
/// </summary>
internal sealed class BitmapSet
{
    /// <summary>One bitmap: its directory entry as last stored, and its bits once loaded.</summary>
    internal sealed class Entry
    {
        public Entry(BitmapDirectoryEntry directory, DirtyBitmap? bits, bool inconsistent, bool tracked, DirtyBitmap? durable = null)
        {
            Directory = directory;
            Bits = bits;
            Inconsistent = inconsistent;
            Tracked = tracked;
            // A tracked bitmap starts with nothing known durable: its first writes journal until a store says otherwise.
            _durable = durable ?? (tracked ? new DirtyBitmap(bits!.GranularityBits, bits.VirtualSize) : null);
        }

        public BitmapDirectoryEntry Directory { get; }
        public DirtyBitmap? Bits { get; set; }
        // The one read of the bits from disk (read-only opens and untracked bitmaps), started by the first asker.
        public Task<DirtyBitmap>? Loading;
        public bool Inconsistent { get; }
        public bool Tracked { get; }
        /// <summary>The bits in memory differ from what the image stores (a store must write them).</summary>
        public bool NeedsStore { get; set; }
        public string Name => Directory.Name;

        private volatile DirtyBitmap? _durable;

        /// <summary>
        /// Tracked bitmaps: the granules a crash cannot lose, because the bitmap stored in the image
        /// has them or the journal holds them durably. A write to a granule outside it waits for the journal first.
        /// </summary>
        public DirtyBitmap? Durable
        {
            get => _durable;
            set => _durable = value;
        }

        /// <summary>The bits a store wrote, which become <see cref="Durable"/> once the image's header points at them.</summary>
        public DirtyBitmap? Stored { get; set; }
    }

    private readonly IBlockDevice _device;
    private readonly int _clusterSize;
    private volatile IReadOnlyList<Entry> _entries;
    // The hot path's view: the tracked bitmaps, replaced (never changed) by the owner.
    private volatile Entry[] _tracked;

    public BitmapSet(IBlockDevice device, int clusterSize, long virtualSize, IReadOnlyList<Entry> entries)
    {
        _device = device;
        _clusterSize = clusterSize;
        VirtualSize = virtualSize;
        _entries = entries;
        _tracked = [.. entries.Where(e => e.Tracked)];
    }

    public long VirtualSize { get; private set; }

    public IReadOnlyList<Entry> Entries => _entries;

    /// <summary>True when at least one bitmap is tracked (writes must mark).</summary>
    public bool Tracking => _tracked.Length > 0;

    /// <summary>Publishes a new set of entries (the owner only).</summary>
    public void Publish(IReadOnlyList<Entry> entries)
    {
        _entries = entries;
        _tracked = [.. entries.Where(e => e.Tracked)];
    }

    /// <summary>
    /// Sets the bits of [offset, offset + length) in every tracked bitmap. No allocation, no lock.
    /// Returns true when a granule of the range is not yet durable in some tracked bitmap: the
    /// caller must have the bitmap journal record the range (<see cref="Write.BitmapJournalActor"/>)
    /// before its write is issued, so a crash cannot keep the data and lose the bit.
    /// </summary>
    public bool Mark(long offset, long length)
    {
        var tracked = _tracked;
        bool journal = false;
        while (true)
        {
            for (int i = 0; i < tracked.Length; i++)
            {
                tracked[i].Bits!.Mark(offset, length);
                if (!journal && !tracked[i].Durable!.AllSet(offset, length)) journal = true;
            }
            // The owner replaced the bitmaps meanwhile (a resize): mark the new ones too. The owner
            // ORs the old bits into the new after publishing them, so no mark falls between.
            var now = _tracked;
            if (ReferenceEquals(now, tracked)) return journal;
            tracked = now;
        }
    }

    /// <summary>True when a granule of the range is not durable in some tracked bitmap.</summary>
    public bool NeedsJournal(long offset, long length)
    {
        foreach (var e in _tracked)
            if (!e.Durable!.AllSet(offset, length)) return true;
        return false;
    }

    /// <summary>The range is durable in the journal for every tracked bitmap (the bitmap journal only).</summary>
    public void MarkDurable(long offset, long length)
    {
        foreach (var e in _tracked) e.Durable!.Mark(offset, length);
    }

    /// <summary>
    /// The bitmap journal has recorded granules in this journal (the generation since the last
    /// store): the next checkpoint must store the bitmaps before it empties the journal.
    /// </summary>
    public bool JournaledSinceStore
    {
        get => _journaledSinceStore;
        set => _journaledSinceStore = value;
    }

    private volatile bool _journaledSinceStore;

    /// <summary>
    /// The checkpoint that stored the bitmaps has switched the header to them and emptied the journal
    /// (the owner, with the bitmap journal held): what was stored is now what a crash cannot lose.
    /// </summary>
    public void StoreDone()
    {
        foreach (var e in _entries)
        {
            if (e.Stored is { } stored) e.Durable = stored;
            e.Stored = null;
        }
        _journaledSinceStore = false;
    }

    /// <summary>
    /// Every granule of the disk is dirty (a snapshot revert, the owner only): the tracked bitmaps
    /// are stored with every bit set by the checkpoint that precedes the revert.
    /// </summary>
    public void MarkWhole()
    {
        foreach (var e in _tracked)
        {
            e.Bits!.Mark(0, VirtualSize);
            e.NeedsStore = true;
        }
    }

    /// <summary>
    /// Reads the directory of the image on <paramref name="device"/>. With <paramref name="track"/>
    /// (a read-write open) every enabled bitmap that is consistent and valid is loaded now and
    /// tracked; the first write whose granules one lacks marks it in use on disk (BitmapJournalActor).
    /// </summary>
    public static async ValueTask<BitmapSet> OpenAsync(IBlockDevice device, ImageHeaderBlock block, bool track, CancellationToken cancellationToken)
    {
        var h = block.Header;
        var directory = await BitmapReader.ReadDirectoryAsync(device, block, cancellationToken).ConfigureAwait(false);
        var entries = new List<Entry>(directory.Count);
        foreach (var d in directory)
        {
            bool inconsistent = (d.Flags & BitmapFlags.InUse) != 0 || BitmapReader.Problem(d, h.Size, h.ClusterBits) is not null;
            bool tracked = track && !inconsistent && (d.Flags & BitmapFlags.Auto) != 0;
            var bits = tracked ? await BitmapReader.ReadBitsAsync(device, d, h.Size, h.ClusterSize, cancellationToken).ConfigureAwait(false) : null;
            // What the image stores is durable: writes to those granules never wait for the journal.
            entries.Add(new Entry(d, bits, inconsistent, tracked, bits?.Copy()));
        }
        return new BitmapSet(device, h.ClusterSize, h.Size, entries);
    }

    /// <summary>
    /// The disk grew (the owner only): every bitmap gets a bigger array with the same bits, the new
    /// space clean; marks that raced with the switch are carried over.
    /// </summary>
    public void Resize(long newSize)
    {
        var old = _entries;
        var next = old.Select(e => e.Bits is { } bits
            ? new Entry(e.Directory, bits.Resized(newSize), e.Inconsistent, e.Tracked, e.Durable?.Resized(newSize)) { NeedsStore = true }
            : new Entry(e.Directory, null, e.Inconsistent, e.Tracked) { NeedsStore = e.NeedsStore }).ToList();
        VirtualSize = newSize;
        Publish(next);
        foreach (var (o, n) in old.Zip(next))
            if (o.Bits is { } ob) n.Bits!.OrPrefix(ob);
    }

    // Stored bitmaps removed since the last store: their clusters go back at the next store.
    private readonly List<BitmapDirectoryEntry> _removed = [];

    /// <summary>Directory entries of removed bitmaps whose clusters the next store releases (the owner only).</summary>
    public List<BitmapDirectoryEntry> Removed => _removed;

    /// <summary>Something must be written at the next checkpoint: changed bits or flags, added or removed bitmaps.</summary>
    public bool NeedsStore => _removed.Count > 0 || _journaledSinceStore || _entries.Any(e => e.NeedsStore);

    private static string Inconsistent(string name) =>
        $"Bitmap '{name}' is inconsistent and cannot be used";

    /// <summary>
    /// Adds an empty bitmap (the owner only); tracked when <paramref name="enabled"/>. Refused when
    /// <paramref name="headerHasRoom"/> is false: cluster 0 cannot carry the bitmaps extension.
    /// </summary>
    /// <exception cref="InvalidOperationException">The name is taken, too long, or the granularity is wrong (qemu-img's words).</exception>
    public void Add(string name, long granularity, bool enabled, int imageVersion, bool headerHasRoom = true)
    {
        if (_entries.Any(e => e.Name == name)) throw new InvalidOperationException($"Bitmap already exists: {name}");
        if (granularity < 512 || (granularity & (granularity - 1)) != 0)
            throw new InvalidOperationException("Granularity must be power of 2 and at least 512");
        if (granularity > 1L << BitmapDirectoryEntry.MaxGranularityBits)
            throw new InvalidOperationException($"Can't make bitmap '{name}' persistent: granularity is too big");
        if (System.Text.Encoding.UTF8.GetByteCount(name) > BitmapDirectoryEntry.MaxNameSize)
            throw new InvalidOperationException($"Can't make bitmap '{name}' persistent: name length exceeds maximum ({BitmapDirectoryEntry.MaxNameSize} characters)");
        if (name.Length == 0) throw new InvalidOperationException("Bitmap name cannot be empty");
        if (imageVersion < 3) throw new InvalidOperationException("Cannot store dirty bitmaps in qcow2 v2 files");
        if (_entries.Count >= BitmapsExtension.MaxBitmaps)
            throw new InvalidOperationException($"Can't make bitmap '{name}' persistent: maximum number of persistent bitmaps is already reached");
        if (!headerHasRoom)
            throw new InvalidOperationException($"Can't make bitmap '{name}' persistent: the {_clusterSize}-byte header cluster has no room for the bitmaps extension (a shorter backing file name would make room)");
        int bits = System.Numerics.BitOperations.Log2((ulong)granularity);
        // QEMU's cap on a bitmap's data, checked before the bits are allocated (a huge disk at a fine
        // granularity would otherwise ask for gigabytes of memory).
        long dataBytes = (((VirtualSize + granularity - 1) >> bits) + 7) / 8;
        if (dataBytes > BitmapDirectoryEntry.MaxDataSize || dataBytes > (long)BitmapDirectoryEntry.MaxTableSize * _clusterSize)
            throw new InvalidOperationException($"Can't make bitmap '{name}' persistent: Too much space will be occupied by the bitmap. Use larger granularity");
        var directory = new BitmapDirectoryEntry { Name = name, GranularityBits = (byte)bits, Flags = enabled ? BitmapFlags.Auto : BitmapFlags.None };
        Publish([.. _entries, new Entry(directory, new DirtyBitmap(bits, VirtualSize), false, enabled) { NeedsStore = true }]);
    }

    /// <summary>Removes a bitmap (the owner only); a stored one's clusters go back at the next store.</summary>
    public void Remove(string name)
    {
        var e = Find(name);
        if (e.Directory.TableOffset != 0) _removed.Add(e.Directory);
        Publish([.. _entries.Where(x => x != e)]);
    }

    /// <summary>Clears every bit of a bitmap (the owner only).</summary>
    public void Clear(string name)
    {
        var e = Find(name);
        if (e.Inconsistent) throw new InvalidOperationException(Inconsistent(name));
        var cleared = new Entry(e.Directory, new DirtyBitmap(e.Directory.GranularityBits, VirtualSize), false, e.Tracked) { NeedsStore = true };
        Publish([.. _entries.Select(x => x == e ? cleared : x)]);
    }

    /// <summary>Sets or clears a bitmap's auto flag (the owner only); an enabled one is tracked from now on.</summary>
    public async Task SetEnabledAsync(string name, bool enabled, CancellationToken cancellationToken)
    {
        var e = Find(name);
        if (e.Inconsistent) throw new InvalidOperationException(Inconsistent(name));
        var bits = await GetBitsAsync(e, cancellationToken).ConfigureAwait(false);
        var directory = Clone(e.Directory);
        directory.Flags = enabled ? directory.Flags | BitmapFlags.Auto : directory.Flags & ~BitmapFlags.Auto;
        var changed = new Entry(directory, bits, false, enabled) { NeedsStore = true };
        Publish([.. _entries.Select(x => x == e ? changed : x)]);
    }

    /// <summary>Sets in bitmap <paramref name="target"/> every granule a dirty extent of <paramref name="source"/> touches (the owner only).</summary>
    public async Task MergeAsync(string target, IEnumerable<BitmapExtent> source, CancellationToken cancellationToken)
    {
        var e = Find(target);
        if (e.Inconsistent) throw new InvalidOperationException(Inconsistent(target));
        var bits = await GetBitsAsync(e, cancellationToken).ConfigureAwait(false);
        foreach (var x in source)
            if (x.Dirty) bits.Mark(x.Start, Math.Min(x.Length, VirtualSize - x.Start));
        e.NeedsStore = true;
    }

    /// <summary>The source bitmap's dirty runs, for a merge: refused when inconsistent, as QEMU refuses it.</summary>
    public async Task<List<BitmapExtent>> DirtyRunsAsync(string name, CancellationToken cancellationToken)
    {
        var e = Find(name);
        if (e.Inconsistent) throw new InvalidOperationException(Inconsistent(name));
        var bits = await GetBitsAsync(e, cancellationToken).ConfigureAwait(false);
        return [.. bits.Extents(0, VirtualSize).Where(x => x.Dirty)];
    }

    private static BitmapDirectoryEntry Clone(BitmapDirectoryEntry d) => new()
    {
        TableOffset = d.TableOffset, TableSize = d.TableSize, Flags = d.Flags, Type = d.Type,
        GranularityBits = d.GranularityBits, Name = d.Name, ExtraData = d.ExtraData,
    };

    /// <summary>The public description of each bitmap, in directory order.</summary>
    public IReadOnlyList<Qcow2Bitmap> Describe() =>
        [.. _entries.Select(e => new Qcow2Bitmap(e.Name, 1L << e.Directory.GranularityBits,
            (e.Directory.Flags & BitmapFlags.Auto) != 0, (e.Directory.Flags & BitmapFlags.InUse) != 0, e.Inconsistent, e.Tracked))];

    /// <summary>The entry named <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No bitmap has that name (the message names it).</exception>
    public Entry Find(string name) =>
        _entries.FirstOrDefault(e => string.Equals(e.Name, name, StringComparison.Ordinal))
        ?? throw new KeyNotFoundException($"Dirty bitmap '{name}' not found");

    /// <summary>The bits of <paramref name="entry"/>, read from the image the first time.</summary>
    /// <exception cref="Qcow2ImageCorruptException">The bitmap's table or data is damaged.</exception>
    public async ValueTask<DirtyBitmap> GetBitsAsync(Entry entry, CancellationToken cancellationToken)
    {
        if (entry.Bits is { } bits) return bits;
        var loading = Volatile.Read(ref entry.Loading);
        if (loading is null)
        {
            var started = BitmapReader.ReadBitsAsync(_device, entry.Directory, VirtualSize, _clusterSize, CancellationToken.None).AsTask();
            loading = Interlocked.CompareExchange(ref entry.Loading, started, null) ?? started;
        }
        var loaded = await loading.WaitAsync(cancellationToken).ConfigureAwait(false);
        // Kept: an edit, a resize or a store of this bitmap works on these bits from now on.
        entry.Bits ??= loaded;
        return entry.Bits;
    }
}
