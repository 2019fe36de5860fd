using System.Collections.Concurrent;

namespace Qcow2Actors.Engine.Write;

/// <summary>What a metadata cluster holds, for overlap checks.</summary>
internal enum MetadataKind : byte
{
    Header = 1,
    L1Table,
    L2Table,
    RefcountTable,
    RefcountBlock,
    SnapshotTable,
    SnapshotL1,
}

/// <summary>
/// Every host cluster that holds metadata, as QEMU's overlap check keeps it. Before data
/// goes to a newly allocated cluster and before a table is written in place, the engine
/// asks here: a data cluster on top of metadata, or a table where another kind lives,
/// means the refcounts lied, and the image is marked corrupt instead of being destroyed.
/// </summary>
internal sealed class MetadataMap
{
    private readonly ConcurrentDictionary<long, MetadataKind> _clusters = new();
    private readonly int _clusterBits;

    public MetadataMap(int clusterBits) => _clusterBits = clusterBits;

    public void Add(long offset, long length, MetadataKind kind)
    {
        for (long c = offset >> _clusterBits; c < (offset + Math.Max(length, 1) + (1L << _clusterBits) - 1) >> _clusterBits; c++)
            _clusters[c] = kind;
    }

    public void Remove(long offset, long length, MetadataKind kind)
    {
        for (long c = offset >> _clusterBits; c < (offset + Math.Max(length, 1) + (1L << _clusterBits) - 1) >> _clusterBits; c++)
            _clusters.TryRemove(new KeyValuePair<long, MetadataKind>(c, kind));
    }

    /// <summary>Null when [offset, offset+length) holds no metadata, else what it overlaps.</summary>
    public string? CheckData(long offset, long length)
    {
        for (long c = offset >> _clusterBits; c <= (offset + length - 1) >> _clusterBits; c++)
            if (_clusters.TryGetValue(c, out var kind))
                return $"data write at 0x{offset:X} (+{length}) would overwrite the {Describe(kind)} in cluster 0x{c << _clusterBits:X}";
        return null;
    }

    /// <summary>Null when a table of <paramref name="kind"/> may be written at <paramref name="offset"/>.</summary>
    public string? CheckTable(long offset, long length, MetadataKind kind)
    {
        for (long c = offset >> _clusterBits; c <= (offset + length - 1) >> _clusterBits; c++)
            if (_clusters.TryGetValue(c, out var there) && there != kind)
                return $"writing the {Describe(kind)} at 0x{offset:X} would overwrite the {Describe(there)} in cluster 0x{c << _clusterBits:X}";
        return null;
    }

    private static string Describe(MetadataKind kind) => kind switch
    {
        MetadataKind.Header => "image header",
        MetadataKind.L1Table => "active L1 table",
        MetadataKind.L2Table => "L2 table",
        MetadataKind.RefcountTable => "refcount table",
        MetadataKind.RefcountBlock => "refcount block",
        MetadataKind.SnapshotTable => "snapshot table",
        _ => "snapshot L1 table",
    };
}
