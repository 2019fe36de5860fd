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
    internal sealed class Entry(BitmapDirectoryEntry directory, DirtyBitmap? bits, bool inconsistent, bool tracked)
    {
        public BitmapDirectoryEntry Directory { get; } = directory;
        public DirtyBitmap? Bits { get; set; } = bits;
        // The one read of the bits from disk (read-only opens and untracked bitmaps), started by the first asker.
        public Task<DirtyBitmap>? Loading;
        public bool Inconsistent { get; } = inconsistent;
        public bool Tracked { get; } = tracked;
        public string Name => Directory.Name;
    }

    private readonly IBlockDevice _device;
    private readonly int _clusterSize;
    private volatile IReadOnlyList<Entry> _entries;
    // The hot path's view: the bits of the tracked bitmaps, replaced (never changed) by the owner.
    private volatile DirtyBitmap[] _tracked;

    public BitmapSet(IBlockDevice device, int clusterSize, long virtualSize, IReadOnlyList<Entry> entries)
    {
        _device = device;
        _clusterSize = clusterSize;
        VirtualSize = virtualSize;
        _entries = entries;
        _tracked = [.. entries.Where(e => e.Tracked).Select(e => e.Bits!)];
    }

    public long VirtualSize { get; }

    public IReadOnlyList<Entry> Entries => _entries;

    /// <summary>True when at least one bitmap is tracked (writes must mark).</summary>
    public bool Tracking => _tracked.Length > 0;

    /// <summary>Publishes a new set of entries (the owner only).</summary>
    public void Publish(IReadOnlyList<Entry> entries)
    {
        _entries = entries;
        _tracked = [.. entries.Where(e => e.Tracked).Select(e => e.Bits!)];
    }

    /// <summary>Sets the bits of [offset, offset + length) in every tracked bitmap. No allocation, no lock.</summary>
    public void Mark(long offset, long length)
    {
        var tracked = _tracked;
        for (int i = 0; i < tracked.Length; i++) tracked[i].Mark(offset, length);
    }

    /// <summary>
    /// Reads the directory of the image on <paramref name="device"/>. With <paramref name="track"/>
    /// (a read-write open) every enabled bitmap that is consistent and valid is loaded now and
    /// tracked; the caller marks those in use on disk before the first write.
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
            entries.Add(new Entry(d, bits, inconsistent, tracked));
        }
        return new BitmapSet(device, h.ClusterSize, h.Size, entries);
    }

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
        return await loading.WaitAsync(cancellationToken).ConfigureAwait(false);
    }
}
