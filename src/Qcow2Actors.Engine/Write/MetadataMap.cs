namespace Qcow2Actors.Engine.Write;

/// <summary>What a metadata cluster holds, for overlap checks. One cluster may hold several (a shared L2 table).</summary>
[Flags]
internal enum MetadataKind : ushort
{
    None = 0,
    Header = 1 << 0,
    L1Table = 1 << 1,
    L2Table = 1 << 2,
    RefcountTable = 1 << 3,
    RefcountBlock = 1 << 4,
    SnapshotTable = 1 << 5,
    SnapshotL1 = 1 << 6,
    SnapshotL2 = 1 << 7,
    BitmapDirectory = 1 << 8,
    BitmapTable = 1 << 9,
}

/// <summary>A write that would land on metadata: the first cluster it hits and what lives there.</summary>
internal readonly record struct OverlapHit(long ClusterOffset, MetadataKind Kind)
{
    /// <summary>The structure's name, as an operator reads it in the log line.</summary>
    public string Structure => MetadataMap.Describe(Kind);
}

/// <summary>
/// Every host cluster that holds metadata (header, active L1, active and snapshot L2 tables,
/// refcount table and blocks, snapshot table, snapshot L1 tables, bitmap directory and bitmap
/// tables) — QEMU's overlap-check set, plus the tables it only checks in its slower modes.
/// Every write that reaches the image file asks here first: data on top of metadata, or a
/// table where another structure lives, means an L2 entry or a refcount lied, and the image is
/// marked corrupt instead of being destroyed.
/// </summary>
/// <remarks>
/// The guest-write fast path asks on every request, so the question is answered lock-free from
/// a bitmap (one bit per cluster: "holds metadata"); only a hit takes the lock to learn which
/// structure it is. Changes (tables allocated, moved, freed) are rare and take the lock.
/// </remarks>
internal sealed class MetadataMap
{
    private readonly object _gate = new();
    private readonly Dictionary<long, MetadataKind> _kinds = new();
    private readonly ClusterBitmap _present = new();
    private readonly int _clusterBits;

    public MetadataMap(int clusterBits) => _clusterBits = clusterBits;

    /// <summary>False only when a benchmark measures the write path without the check (never in production).</summary>
    internal bool Enabled { get; set; } = true;

    /// <summary>Registers [offset, offset + length) (whole clusters) as holding <paramref name="kind"/>.</summary>
    public void Add(long offset, long length, MetadataKind kind)
    {
        if (length <= 0) return;
        lock (_gate)
        {
            for (long c = offset >> _clusterBits, last = LastCluster(offset, length); c <= last; c++)
            {
                _kinds[c] = _kinds.GetValueOrDefault(c) | kind;
                _present.Set(c);
            }
        }
    }

    /// <summary>Forgets <paramref name="kind"/> in [offset, offset + length); other structures in those clusters stay.</summary>
    public void Remove(long offset, long length, MetadataKind kind)
    {
        if (length <= 0) return;
        lock (_gate)
        {
            for (long c = offset >> _clusterBits, last = LastCluster(offset, length); c <= last; c++)
            {
                if (!_kinds.TryGetValue(c, out var there)) continue;
                there &= ~kind;
                if (there != MetadataKind.None)
                {
                    _kinds[c] = there;
                    continue;
                }
                _kinds.Remove(c);
                _present.Clear(c);
            }
        }
    }

    /// <summary>Forgets every structure (before the map is built again from an image an online snapshot edit changed).</summary>
    public void Clear()
    {
        lock (_gate)
        {
            foreach (var c in _kinds.Keys) _present.Clear(c);
            _kinds.Clear();
        }
    }

    /// <summary>What [offset, offset + length) holds, or None (for tests and diagnostics).</summary>
    public MetadataKind KindsAt(long offset, long length)
    {
        var all = MetadataKind.None;
        lock (_gate)
            for (long c = offset >> _clusterBits, last = LastCluster(offset, length); c <= last; c++)
                all |= _kinds.GetValueOrDefault(c);
        return all;
    }

    /// <summary>The first metadata cluster guest data at [offset, offset + length) would overwrite, or null.</summary>
    public OverlapHit? FindData(long offset, long length) => Find(offset, length, MetadataKind.None);

    /// <summary>
    /// The first cluster in [offset, offset + length) that holds a structure other than
    /// <paramref name="kind"/> (a table of that kind may be rewritten where it lives), or null.
    /// </summary>
    public OverlapHit? FindTable(long offset, long length, MetadataKind kind) => Find(offset, length, kind);

    private OverlapHit? Find(long offset, long length, MetadataKind allowed)
    {
        if (length <= 0 || !Enabled) return null;
        long first = offset >> _clusterBits, last = LastCluster(offset, length);
        // Lock-free: almost every write touches no metadata cluster at all.
        long c = _present.FirstSet(first, last);
        return c < 0 ? null : FindLocked(c, last, allowed);
    }

    private OverlapHit? FindLocked(long c, long last, MetadataKind allowed)
    {
        for (; c >= 0; c = c < last ? _present.FirstSet(c + 1, last) : -1)
        {
            MetadataKind there;
            lock (_gate) there = _kinds.GetValueOrDefault(c) & ~allowed;
            if (there != MetadataKind.None) return new OverlapHit(c << _clusterBits, Lowest(there));
        }
        return null;
    }

    /// <summary>Null when [offset, offset + length) holds no metadata, else the one-line problem.</summary>
    public string? CheckData(long offset, long length) =>
        FindData(offset, length) is { } hit ? DescribeData(offset, length, hit) : null;

    /// <summary>Null when a table of <paramref name="kind"/> may be written at <paramref name="offset"/>, else the one-line problem.</summary>
    public string? CheckTable(long offset, long length, MetadataKind kind) =>
        FindTable(offset, length, kind) is { } hit ? DescribeTable(offset, length, kind, hit) : null;

    public static string DescribeData(long offset, long length, OverlapHit hit) =>
        $"prevented a data write at host offset 0x{offset:X} (+{length} bytes) that overlaps the {hit.Structure} in cluster 0x{hit.ClusterOffset:X}";

    public static string DescribeTable(long offset, long length, MetadataKind kind, OverlapHit hit) =>
        $"prevented writing the {Describe(kind)} at host offset 0x{offset:X} (+{length} bytes): it overlaps the {hit.Structure} in cluster 0x{hit.ClusterOffset:X}";

    private long LastCluster(long offset, long length) => (offset + Math.Max(length, 1) - 1) >> _clusterBits;

    private static MetadataKind Lowest(MetadataKind kinds) => (MetadataKind)((int)kinds & -(int)kinds);

    public static string Describe(MetadataKind kind) => Lowest(kind) switch
    {
        MetadataKind.Header => "image header",
        MetadataKind.L1Table => "active L1 table",
        MetadataKind.L2Table => "active L2 table",
        MetadataKind.RefcountTable => "refcount table",
        MetadataKind.RefcountBlock => "refcount block",
        MetadataKind.SnapshotTable => "snapshot table",
        MetadataKind.SnapshotL1 => "snapshot L1 table",
        MetadataKind.SnapshotL2 => "snapshot L2 table",
        MetadataKind.BitmapDirectory => "bitmap directory",
        MetadataKind.BitmapTable => "bitmap table",
        _ => "metadata",
    };
}
