using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Metadata;
using Qcow2Actors.Engine.Write;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Snapshots;

/// <summary>
/// One snapshot edit of a closed image: the header as read, the snapshot table, the refcounts (in
/// memory until written back), and the L2 tables touched, cached by host offset so an L2 table shared
/// by several L1 tables is one buffer whatever path reaches it.
/// </summary>
internal sealed class SnapshotSession
{
    private const ulong Copied = 1UL << 63;

    private readonly IBlockDevice _device;
    private readonly Dictionary<long, byte[]> _l2 = new();
    private readonly HashSet<long> _dirtyL2 = new();
    // The journal records RefcountState appends are not needed offline: the writes are ordered instead.
    private readonly List<MetadataRecord> _records = new();
    private readonly long _oldTableBytes;
    private RefcountState? _refcounts;

    private SnapshotSession(IBlockDevice device, ImageHeaderBlock block, List<SnapshotEntry> snapshots, long oldTableBytes)
    {
        _device = device;
        Block = block;
        Snapshots = snapshots;
        _oldTableBytes = oldTableBytes;
    }

    public ImageHeaderBlock Block { get; }

    public Qcow2Header Header => Block.Header;

    public List<SnapshotEntry> Snapshots { get; }

    private int ClusterBits => Header.ClusterBits;

    private long ClusterSize => 1L << Header.ClusterBits;

    public RefcountState Refcounts => _refcounts ??= new RefcountState(_device, Header);

    /// <summary>Reads cluster 0 and the snapshot table, refusing states a snapshot edit must not touch.</summary>
    /// <param name="device">The image.</param>
    /// <param name="forWrite">An edit (refuses corrupt and dirty images), not a list.</param>
    /// <param name="verb">What is being done, for messages.</param>
    /// <param name="online">
    /// The image is open in our engine, which checkpointed it and then set the dirty bit itself so a
    /// crash during the edit is repaired at the next open: that dirty bit is the engine's, not a crash's.
    /// </param>
    public static SnapshotSession Open(IBlockDevice device, bool forWrite, string verb, bool online = false)
    {
        var cluster0 = new byte[(int)Math.Min(device.Length, 1L << Qcow2Header.MaxClusterBits)];
        int n = device.Read(cluster0, 0);
        var block = ImageHeaderBlock.Read(cluster0.AsSpan(0, n));
        var h = block.Header;
        string name = device.Name;
        if (h.IsJournalPending)
            throw new SnapshotEditException($"Could not {verb}: '{name}' has metadata in a pending journal; run 'q2a recover' first");
        if (forWrite)
        {
            if (h.IsCorrupt)
                throw new SnapshotEditException($"Could not {verb}: '{name}' is marked corrupt; run 'q2a check -r all' first");
            if (h.IsDirty && !online)
                throw new SnapshotEditException($"Could not {verb}: '{name}' was not closed cleanly (dirty bit); run 'q2a recover' first");
        }
        var (snapshots, tableBytes) = ReadSnapshotTable(device, h, V2Promotion.IsPromoted(block) ? 2 : h.Version);
        // QEMU fills in the current size for entries too old to record theirs (and writes it back).
        foreach (var e in snapshots) e.DiskSize ??= h.Size;
        return new SnapshotSession(device, block, snapshots, tableBytes);
    }

    /// <summary>
    /// The snapshot table of the image <paramref name="h"/> heads, with sizes filled in as <see cref="Open"/>
    /// does (for listing the snapshots of an open image).
    /// </summary>
    public static List<SnapshotEntry> ReadSnapshots(IBlockDevice device, Qcow2Header h)
    {
        var (snapshots, _) = ReadSnapshotTable(device, h, h.Version);
        foreach (var e in snapshots) e.DiskSize ??= h.Size;
        return snapshots;
    }

    /// <summary>Refuses what cannot share clusters: 1-bit refcounts and external data files (as QEMU does).</summary>
    public void RequireSharing(string verb)
    {
        if (Header.HasExternalDataFile)
            throw new SnapshotEditException($"Could not {verb}: images with an external data file do not support internal snapshots");
        if (Header.RefcountOrder == 0)
            throw new SnapshotEditException($"Could not {verb}: with 1-bit refcounts no cluster can be shared (convert with -o refcount_bits=16)");
    }

    // version: the image's own (a v2 image the engine stores as v3 while it edits keeps v2's table rules).
    private static (List<SnapshotEntry> Entries, long Bytes) ReadSnapshotTable(IBlockDevice device, Qcow2Header h, int version)
    {
        if (h.NbSnapshots == 0) return ([], 0);
        long cap = Math.Min(SnapshotTable.MaxTableSize, device.Length - h.SnapshotsOffset);
        if (cap <= 0)
            throw new Qcow2ImageCorruptException($"snapshot table at 0x{h.SnapshotsOffset:X} lies past the end of {device.Name}");
        long size = Math.Min(cap, 64 * 1024);
        while (true)
        {
            var buffer = new byte[size];
            int n = device.Read(buffer, h.SnapshotsOffset);
            try
            {
                var entries = SnapshotTable.Read(buffer.AsSpan(0, n), h.NbSnapshots, version, h.SnapshotsOffset);
                return (entries, TableBytes(buffer, h.NbSnapshots));
            }
            catch (Qcow2FormatException) when (size < cap)
            {
                // An entry probably runs past what was read: read more, up to QEMU's table limit.
                size = Math.Min(cap, size * 4);
            }
        }
    }

    // Bytes the table occupies as stored (entries may carry more or less extra data than we write).
    private static long TableBytes(ReadOnlySpan<byte> table, int count)
    {
        long off = 0;
        for (int i = 0; i < count; i++)
        {
            off = (off + 7) & ~7L;
            off += SnapshotEntry.StoredSize(table[(int)off..]);
        }
        return off;
    }

    /// <summary>Reads an L1 table of <paramref name="entries"/> entries.</summary>
    public ulong[] ReadL1(long offset, int entries, string what)
    {
        if (entries == 0) return [];
        if ((offset & (ClusterSize - 1)) != 0 || offset <= 0)
            throw new Qcow2ImageCorruptException($"{what} offset 0x{offset:X} is not a valid cluster offset");
        if ((uint)entries > Qcow2Header.MaxL1Size)
            throw new Qcow2ImageCorruptException($"{what} has {entries} entries, above QEMU's limit of {Qcow2Header.MaxL1Size}");
        var bytes = new byte[entries * 8L];
        if (_device.Read(bytes, offset) < bytes.Length)
            throw new Qcow2ImageCorruptException($"{what} at 0x{offset:X} lies past the end of {_device.Name}");
        return L1Table.Decode(bytes);
    }

    private byte[] LoadL2(long offset, int l1Index)
    {
        if (_l2.TryGetValue(offset, out var table)) return table;
        if ((offset & (ClusterSize - 1)) != 0)
            throw new Qcow2ImageCorruptException($"L1 entry {l1Index} points to an L2 table at unaligned offset 0x{offset:X}");
        table = new byte[ClusterSize];
        if (_device.Read(table, offset) < table.Length)
            throw new Qcow2ImageCorruptException($"L1 entry {l1Index} points to an L2 table at 0x{offset:X}, past the end of {_device.Name}");
        _l2[offset] = table;
        return table;
    }

    /// <summary>
    /// Adds <paramref name="sign"/> for every path of one L1 tree: each L2 table it references, and
    /// each host cluster reached through it (standard and preallocated zero clusters, and every
    /// cluster a compressed entry's sectors touch). An L2 table reached twice counts twice.
    /// </summary>
    public void AddTree(ulong[] l1, int sign, Dictionary<long, long> deltas)
    {
        bool extended = Header.HasExtendedL2;
        int entries = Header.L2Entries;
        for (int i = 0; i < l1.Length; i++)
        {
            long l2Offset = (long)(l1[i] & L1Entry.OffsetMask);
            if (l2Offset == 0) continue;
            Add(deltas, l2Offset >> ClusterBits, sign);
            AddL2Entries(LoadL2(l2Offset, i), l2Offset, 0, sign, deltas);
        }
    }

    /// <summary>
    /// Adds <paramref name="sign"/> for each host cluster the entries of <paramref name="l2"/> (the table
    /// at <paramref name="l2Offset"/>) from index <paramref name="first"/> on reach, the table itself not counted.
    /// </summary>
    public void AddL2Entries(byte[] l2, long l2Offset, int first, int sign, Dictionary<long, long> deltas)
    {
        bool extended = Header.HasExtendedL2;
        for (int j = first; j < Header.L2Entries; j++)
        {
            var e = L2Table.ReadEntry(l2, j, extended);
            switch (e.GetKind(Header.Version, extended))
            {
                case L2EntryKind.Compressed:
                    AddClusters(e.CompressedHostOffset(ClusterBits), e.CompressedReadLength(ClusterBits), sign, deltas);
                    break;
                case L2EntryKind.Normal:
                case L2EntryKind.ZeroAllocated:
                    if ((e.HostOffset & (ClusterSize - 1)) != 0)
                        throw new Qcow2ImageCorruptException($"L2 table at 0x{l2Offset:X} entry {j} maps unaligned host offset 0x{e.HostOffset:X}");
                    Add(deltas, e.HostOffset >> ClusterBits, sign);
                    break;
            }
        }
    }

    /// <summary>Adds <paramref name="sign"/> to every cluster touched by <c>[offset, offset + length)</c>.</summary>
    public void AddClusters(long offset, long length, int sign, Dictionary<long, long> deltas)
    {
        if (length <= 0) return;
        for (long c = offset >> ClusterBits; c <= (offset + length - 1) >> ClusterBits; c++) Add(deltas, c, sign);
    }

    private static void Add(Dictionary<long, long> deltas, long cluster, long delta) =>
        deltas[cluster] = deltas.GetValueOrDefault(cluster) + delta;

    /// <summary>Refuses (before anything is written) a count above the width's maximum or below zero.</summary>
    public void CheckDeltas(Dictionary<long, long> deltas, string verb)
    {
        var rc = Refcounts;
        ulong max = rc.MaxRefcount;
        foreach (var (cluster, delta) in deltas.OrderBy(kv => kv.Key))
        {
            if (delta == 0) continue;
            ulong current = rc.Get(cluster);
            if (delta > 0 && (ulong)delta > max - current)
                throw new SnapshotEditException(
                    $"Could not {verb}: the refcount of cluster {cluster} would exceed {max}, the maximum of {Header.RefcountBits}-bit refcounts");
            if (delta < 0 && current < (ulong)-delta)
                throw new Qcow2ImageCorruptException(
                    $"Could not {verb}: cluster {cluster} has refcount {current} but {-delta} more reference(s) would be dropped; run 'q2a check -r all'");
        }
    }

    public void ApplyDeltas(Dictionary<long, long> deltas)
    {
        foreach (var (cluster, delta) in deltas.OrderBy(kv => kv.Key))
            if (delta != 0) Refcounts.Adjust(cluster, checked((int)delta), _records);
    }

    /// <summary>Allocates clusters for <paramref name="bytes"/> bytes (offset 0 for none, as an empty L1 needs no space).</summary>
    public long AllocateBytes(long bytes)
    {
        if (bytes <= 0) return 0;
        int clusters = checked((int)((bytes + ClusterSize - 1) >> ClusterBits));
        return Refcounts.Allocate(clusters, _records, out _);
    }

    /// <summary>Encodes the table and allocates its clusters; the buffer is padded to whole clusters.</summary>
    public (long Offset, byte[] Bytes) PlanSnapshotTable(IReadOnlyList<SnapshotEntry> entries)
    {
        long size = SnapshotTable.ComputeSize(entries);
        if (size > SnapshotTable.MaxTableSize)
            throw new SnapshotEditException($"the snapshot table would need {size} bytes, above QEMU's limit of {SnapshotTable.MaxTableSize}");
        var bytes = new byte[(size + ClusterSize - 1) & ~(ClusterSize - 1)];
        SnapshotTable.Write(entries, bytes);
        return (AllocateBytes(size), bytes);
    }

    public void WriteL1(long offset, ulong[] l1, bool copied)
    {
        if (l1.Length == 0) return;
        var bytes = new byte[(l1.Length * 8L + ClusterSize - 1) & ~(ClusterSize - 1)];
        L1Table.Encode(l1, bytes, clearCopied: !copied);
        _device.Write(bytes, offset);
    }

    /// <summary>
    /// Sets COPIED in the active L1 and its L2 tables exactly where the refcount is 1 (FORMAT.md §6):
    /// standard and preallocated zero clusters by their refcount, never on compressed, plain zero or
    /// unallocated entries. Changed L2 tables are marked for <see cref="WriteActiveTables"/>.
    /// </summary>
    public void RecomputeCopied(ulong[] l1)
    {
        bool extended = Header.HasExtendedL2;
        int entries = Header.L2Entries;
        var rc = Refcounts;
        for (int i = 0; i < l1.Length; i++)
        {
            long l2Offset = (long)(l1[i] & L1Entry.OffsetMask);
            if (l2Offset == 0)
            {
                l1[i] &= ~Copied;
                continue;
            }
            l1[i] = rc.Get(l2Offset >> ClusterBits) == 1 ? l1[i] | Copied : l1[i] & ~Copied;
            var l2 = LoadL2(l2Offset, i);
            for (int j = 0; j < entries; j++)
            {
                var e = L2Table.ReadEntry(l2, j, extended);
                bool want = e.GetKind(Header.Version, extended) is L2EntryKind.Normal or L2EntryKind.ZeroAllocated
                    && rc.Get(e.HostOffset >> ClusterBits) == 1;
                if (e.IsCopied == want) continue;
                L2Table.WriteEntry(l2, j, extended, e.WithCopied(want));
                _dirtyL2.Add(l2Offset);
            }
        }
    }

    /// <summary>Writes the changed L2 tables and the active L1 (with its COPIED flags) in place.</summary>
    public void WriteActiveTables(long l1Offset, ulong[] l1)
    {
        foreach (var offset in _dirtyL2.Order()) _device.Write(_l2[offset], offset);
        _dirtyL2.Clear();
        WriteL1(l1Offset, l1, copied: true);
    }

    /// <summary>
    /// Writes the header fields that differ from the header as read, in one write (they all lie in
    /// bytes 24-71, one sector), so the image switches from the old tables to the new ones at once.
    /// </summary>
    public void WriteHeader(Qcow2Header next)
    {
        if (_refcounts is { } rc)
        {
            next.RefcountTableOffset = rc.TableOffset;
            next.RefcountTableClusters = rc.TableClusters;
        }
        HeaderWriter.WriteChangedFields(_device, Header, next);
    }

    /// <summary>
    /// With the new active L1 (at <paramref name="l1Offset"/>, <paramref name="l1Size"/> entries) and its
    /// refcounts already durable: one header write switches size and L1 together, then the references only
    /// the old tree held (<paramref name="decrements"/>) and a moved refcount table's old clusters are dropped.
    /// Flushed after each step, so a crash leaves either the old image or the new one.
    /// </summary>
    public void SwitchActiveL1(long newSize, long l1Offset, int l1Size, Dictionary<long, long> decrements)
    {
        var next = Header.Clone();
        next.Size = newSize;
        next.L1TableOffset = l1Offset;
        next.L1Size = l1Size;
        WriteHeader(next);
        _device.Flush();
        ApplyDeltas(decrements);
        ReleaseOldRefcountTable();
        Refcounts.WriteBack();
        _device.Flush();
    }

    /// <summary>Frees the clusters of the snapshot table as read.</summary>
    public void FreeOldSnapshotTable()
    {
        if (Header.NbSnapshots == 0 || _oldTableBytes == 0) return;
        var deltas = new Dictionary<long, long>();
        AddClusters(Header.SnapshotsOffset, _oldTableBytes, -1, deltas);
        ApplyDeltas(deltas);
    }

    /// <summary>
    /// When the refcount table grew and moved, its old clusters were freed in memory; keep them at
    /// refcount 1 until the header points at the new table, because until then it is still the live one.
    /// </summary>
    public void KeepOldRefcountTable()
    {
        if (Refcounts.TableOffset == Header.RefcountTableOffset) return;
        foreach (var c in OldRefcountTableClusters()) Refcounts.Set(c, 1, _records);
    }

    /// <summary>After the header switch, frees the old refcount table's clusters (if it moved).</summary>
    public void ReleaseOldRefcountTable()
    {
        if (Refcounts.TableOffset == Header.RefcountTableOffset) return;
        foreach (var c in OldRefcountTableClusters()) Refcounts.Set(c, 0, _records);
    }

    private IEnumerable<long> OldRefcountTableClusters()
    {
        long first = Header.RefcountTableOffset >> ClusterBits;
        for (long c = first; c < first + Header.RefcountTableClusters; c++) yield return c;
    }
}
