namespace Qcow2Actors.Engine.Metadata;

/// <summary>
/// One metadata change as an absolute, idempotent fact ("entry i of the table at X is V"),
/// never a delta: replaying a record twice, or replaying records whose effect already
/// reached the disk in a checkpoint, leaves the same bytes.
/// </summary>
internal abstract record MetadataRecord;

/// <summary>Active L1 entry <paramref name="Index"/> becomes <paramref name="Value"/>.</summary>
internal sealed record SetL1Entry(int Index, ulong Value) : MetadataRecord;

/// <summary>
/// Entry <paramref name="Index"/> of the L2 table at host offset <paramref name="TableOffset"/>
/// becomes (<paramref name="Word0"/>, <paramref name="Word1"/>); Word1 is the subcluster
/// bitmap and is 0 for standard (64-bit) L2 entries.
/// </summary>
internal sealed record SetL2Entry(long TableOffset, int Index, ulong Word0, ulong Word1) : MetadataRecord;

/// <summary>The refcount of host cluster <paramref name="Cluster"/> becomes <paramref name="Value"/>.</summary>
internal sealed record SetRefcount(long Cluster, ulong Value) : MetadataRecord;

/// <summary>Refcount table entry <paramref name="Index"/> becomes <paramref name="Value"/>.</summary>
internal sealed record SetRefcountTableEntry(int Index, ulong Value) : MetadataRecord;

/// <summary>What kind of table a <see cref="NewTable"/> record creates.</summary>
internal enum TableKind : byte
{
    /// <summary>An L2 table (one cluster).</summary>
    L2 = 1,
    /// <summary>A refcount block (one cluster).</summary>
    RefcountBlock = 2,
    /// <summary>The refcount table (contiguous clusters).</summary>
    RefcountTable = 3,
    /// <summary>The active L1 table (contiguous clusters).</summary>
    L1 = 4,
}

/// <summary>
/// A table is created at <paramref name="Offset"/> spanning <paramref name="Length"/> bytes and
/// starts zeroed: replay must not trust the old bytes of a reused cluster there.
/// </summary>
internal sealed record NewTable(TableKind Kind, long Offset, long Length) : MetadataRecord;

/// <summary>Header fields the engine changes while an image is open.</summary>
internal enum HeaderField : byte
{
    /// <summary>l1_table_offset (bytes 40-47).</summary>
    L1TableOffset = 1,
    /// <summary>l1_size (bytes 36-39).</summary>
    L1Size = 2,
    /// <summary>refcount_table_offset (bytes 48-55).</summary>
    RefcountTableOffset = 3,
    /// <summary>refcount_table_clusters (bytes 56-59).</summary>
    RefcountTableClusters = 4,
    /// <summary>size (bytes 24-31).</summary>
    Size = 5,
}

/// <summary>Header field <paramref name="Field"/> becomes <paramref name="Value"/>.</summary>
internal sealed record SetHeaderField(HeaderField Field, ulong Value) : MetadataRecord;

/// <summary>
/// The persisted event: every record gathered since the previous flush, written as one
/// journal message (one group commit per flush, never one event per guest write).
/// </summary>
internal sealed record JournalBatch(IReadOnlyList<MetadataRecord> Records);

/// <summary>
/// Bitmap evidence, not image metadata (replay of tables skips it): this journal records every
/// granule that went from clear to set in bitmap <paramref name="Name"/> since it was stored with
/// its table at <paramref name="TableOffset"/>, before any write to such a granule was issued.
/// Recovery trusts <see cref="BitmapRangesSet"/> records only for a bitmap this names as it is on disk.
/// </summary>
internal sealed record BitmapTracked(string Name, long TableOffset) : MetadataRecord;

/// <summary>
/// Bitmap evidence, not image metadata: the guest ranges (byte offset, length) whose granules are
/// set in every bitmap a <see cref="BitmapTracked"/> record of the same journal names.
/// </summary>
internal sealed record BitmapRangesSet(IReadOnlyList<(long Offset, long Length)> Ranges) : MetadataRecord
{
    /// <summary>Value equality over the ranges (a record's default compares the list by reference).</summary>
    public bool Equals(BitmapRangesSet? other) => other is not null && Ranges.SequenceEqual(other.Ranges);

    /// <inheritdoc/>
    public override int GetHashCode() => Ranges.Count;
}
