using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Metadata;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Write;

/// <summary>
/// The refcount table and blocks of one image, in memory, at any width (1..64 bits).
/// Owned by exactly one caller at a time (the RefcountActor while the image is open, the
/// replayer during recovery), so it has no locks. Every change appends the absolute
/// records that reproduce it; tables reach the disk only through <see cref="WriteBack"/>.
/// </summary>
internal sealed class RefcountState
{
    private readonly IBlockDevice _device;
    private readonly int _clusterBits;
    private readonly int _order;
    private readonly long _entriesPerBlock;
    private readonly ulong _max;
    private readonly Dictionary<long, byte[]> _blocks = new();
    private readonly HashSet<long> _dirtyBlocks = new();
    private readonly HashSet<long> _quarantine = new();
    private ulong[] _table;
    private bool _tableDirty;
    private long _freeHint;

    public RefcountState(IBlockDevice device, Qcow2Header header)
    {
        _device = device;
        _clusterBits = header.ClusterBits;
        _order = header.RefcountOrder;
        _entriesPerBlock = RefcountBlock.EntriesPerBlock(_clusterBits, _order);
        _max = RefcountBlock.MaxValue(_order);
        TableOffset = header.RefcountTableOffset;
        TableClusters = header.RefcountTableClusters;
        var bytes = new byte[(long)TableClusters << _clusterBits];
        if (device.Read(bytes, TableOffset) < bytes.Length)
            throw new Qcow2ImageCorruptException($"refcount table at 0x{TableOffset:X} lies past the end of {device.Name}");
        _table = new ulong[bytes.Length / 8];
        // Zero entries (no block) are valid and already zero here; a big cluster's table is mostly those.
        for (int i = NextNonZero(bytes, 0); i < _table.Length; i = NextNonZero(bytes, i + 1))
        {
            var e = RefcountTableEntry.Read(bytes, i);
            if (e.Validate(_clusterBits) is { } problem)
                throw new Qcow2ImageCorruptException($"refcount table entry {i}: {problem}");
            _table[i] = e.Raw;
        }
        AllocatedEnd = AlignUp(device.Length);
    }

    /// <summary>The first 8-byte table entry at or after <paramref name="from"/> with a nonzero byte (the entry count if none).</summary>
    private static int NextNonZero(byte[] table, int from)
    {
        var count = table.Length / RefcountTableEntry.Size;
        if (from >= count) return count;
        var found = table.AsSpan(from * RefcountTableEntry.Size, (count - from) * RefcountTableEntry.Size).IndexOfAnyExcept((byte)0);
        return found < 0 ? count : from + found / RefcountTableEntry.Size;
    }

    public long ClusterSize => 1L << _clusterBits;

    /// <summary>Where new and moved refcount structures are registered for overlap checks (null during replay).</summary>
    public MetadataMap? Map { get; set; }

    /// <summary>Host offsets of every refcount block.</summary>
    public IEnumerable<long> BlockOffsets() => _table.Where(e => e != 0).Select(e => (long)(e & RefcountTableEntry.OffsetMask));

    public long TableOffset { get; private set; }

    public int TableClusters { get; private set; }

    /// <summary>End of everything ever allocated or present in the file: clusters at or past it are fresh (read as zeros).</summary>
    public long AllocatedEnd { get; private set; }

    public bool IsDirty => _tableDirty || _dirtyBlocks.Count > 0;

    public int QuarantineCount => _quarantine.Count;

    public ulong MaxRefcount => _max;

    // Clusters with a nonzero refcount, kept from CountAllocated on (-1 before): written by the
    // owner only, read without a lock by the metrics gauge.
    private long _allocated = -1;

    /// <summary>Clusters with a nonzero refcount, or -1 until <see cref="CountAllocated"/> has run.</summary>
    public long AllocatedClusters => Volatile.Read(ref _allocated);

    /// <summary>
    /// Counts the clusters with a nonzero refcount (what qemu-img check counts as allocated; blocks not
    /// cached are read into one scratch buffer, not kept) and keeps the count as refcounts change from
    /// then on (the metrics gauge; the quota account follows <see cref="AllocatedDelta"/>). Blocking I/O.
    /// </summary>
    public long CountAllocated()
    {
        long count = 0;
        byte[]? scratch = null;
        for (long ti = 0; ti < _table.Length; ti++)
        {
            if (_table[ti] == 0) continue;
            if (!_blocks.TryGetValue(ti, out var block))
            {
                long offset = (long)(_table[ti] & RefcountTableEntry.OffsetMask);
                block = scratch ??= new byte[ClusterSize];
                if (_device.Read(block, offset) < block.Length)
                    throw new Qcow2ImageCorruptException($"refcount block {ti} at 0x{offset:X} lies past the end of {_device.Name}");
            }
            for (long i = 0; i < _entriesPerBlock; i++)
                if (RefcountBlock.Get(block, i, _order) != 0) count++;
        }
        Volatile.Write(ref _allocated, count);
        return count;
    }

    public ulong Get(long cluster)
    {
        long ti = cluster / _entriesPerBlock;
        if (ti >= _table.Length || _table[ti] == 0) return 0;
        return RefcountBlock.Get(LoadBlock(ti), cluster % _entriesPerBlock, _order);
    }

    /// <summary>Sets a refcount, creating refcount blocks (and growing the table) as needed.</summary>
    public void Set(long cluster, ulong value, List<MetadataRecord> records)
    {
        if (value > _max)
            throw new Qcow2ImageCorruptException($"refcount of cluster {cluster} would overflow its {1 << _order}-bit width");
        long ti = cluster / _entriesPerBlock;
        if (ti >= _table.Length || _table[ti] == 0)
        {
            if (value == 0) return;
            EnsureBlock(ti, records);
            if (Get(cluster) == value) return; // the new block landed on this very cluster
        }
        var block = LoadBlock(ti);
        ulong old = RefcountBlock.Get(block, cluster % _entriesPerBlock, _order);
        if ((old == 0) != (value == 0))
        {
            AllocatedDelta += value == 0 ? -1 : 1; // the quota's account (budget)
            if (_allocated >= 0) Volatile.Write(ref _allocated, _allocated + (value == 0 ? -1 : 1)); // the metrics gauge
        }
        RefcountBlock.Set(block, cluster % _entriesPerBlock, _order, value);
        _dirtyBlocks.Add(ti);
        records.Add(new SetRefcount(cluster, value));
        if (value == 0 && cluster < _freeHint) _freeHint = cluster;
    }

    /// <summary>Adds <paramref name="delta"/>; a count reaching 0 is quarantined until <see cref="Release"/>.</summary>
    public ulong Adjust(long cluster, int delta, List<MetadataRecord> records)
    {
        ulong current = Get(cluster);
        if (delta < 0 && current < (ulong)-delta)
            throw new Qcow2ImageCorruptException($"refcount of cluster {cluster} would drop below zero");
        if (delta > 0 && current > _max - (ulong)delta)
            throw new Qcow2ImageCorruptException($"refcount of cluster {cluster} would overflow its {1 << _order}-bit width");
        ulong next = delta >= 0 ? current + (ulong)delta : current - (ulong)-delta;
        Set(cluster, next, records);
        if (next == 0) _quarantine.Add(cluster);
        return next;
    }

    /// <summary>Makes quarantined clusters allocatable again (the records that freed them are durable).</summary>
    public void Release(IEnumerable<long> clusters)
    {
        foreach (var c in clusters)
        {
            if (_quarantine.Remove(c) && c < _freeHint) _freeHint = c;
        }
    }

    /// <summary>Every cluster currently held back.</summary>
    public long[] QuarantinedClusters() => [.. _quarantine];

    /// <summary>
    /// Allocates <paramref name="count"/> contiguous clusters at refcount 1. Fresh clusters
    /// (past everything the file ever held) are known to read as zeros.
    /// </summary>
    public long Allocate(int count, List<MetadataRecord> records, out bool fresh) =>
        AllocateAt(FindFreeRun(count), count, records, out fresh);

    /// <summary>Allocates the run <see cref="FindFreeRun"/> found (nothing may have changed in between).</summary>
    public long AllocateAt(long start, int count, List<MetadataRecord> records, out bool fresh)
    {
        long startByte = start << _clusterBits;
        fresh = startByte >= AllocatedEnd;
        AllocatedEnd = Math.Max(AllocatedEnd, (start + count) << _clusterBits);
        // Refcount blocks created for the run must not land inside it.
        _reserved.Add((start, start + count));
        try
        {
            // Blocks the run needs come first, so a full disk refuses the run before any of its counts change.
            for (long ti = start / _entriesPerBlock; ti <= (start + count - 1) / _entriesPerBlock; ti++)
                if (ti >= _table.Length || _table[ti] == 0) EnsureBlock(ti, records);
            for (long c = start; c < start + count; c++) Set(c, 1, records);
        }
        finally
        {
            _reserved.RemoveAt(_reserved.Count - 1);
        }
        if (start == _freeHint) _freeHint = start + count;
        return startByte;
    }

    /// <summary>
    /// Clusters whose refcount went from 0 to above 0, minus those that went back to 0, since this
    /// object was created (what an image's quota account follows; see <see cref="CountAllocated"/>).
    /// </summary>
    public long AllocatedDelta { get; private set; }

    /// <summary>
    /// At most how many clusters allocating the run at <paramref name="start"/> takes from 0 to a
    /// refcount above 0: the run, a refcount block for each range of it that has none (two where the
    /// run fills the block's own range, so the block lands in the next one), and a grown refcount table.
    /// </summary>
    public long NewClustersFor(long start, int count)
    {
        long n = count;
        long firstTi = start / _entriesPerBlock, lastTi = (start + count - 1) / _entriesPerBlock, reach = lastTi;
        for (long ti = firstTi; ti <= lastTi; ti++)
        {
            if (ti < _table.Length && _table[ti] != 0) continue;
            long rangeStart = Math.Max(ti * _entriesPerBlock, 1), rangeEnd = (ti + 1) * _entriesPerBlock;
            bool spills = start <= rangeStart && start + count >= rangeEnd;
            n += spills ? 2 : 1;
            if (spills) reach = Math.Max(reach, ti + 1);
        }
        if (reach >= _table.Length) n += GrownTableClusters(reach + 1) + 1;
        return n;
    }

    /// <summary>
    /// At most how many refcount blocks and table clusters allocating <paramref name="clusters"/> new
    /// clusters (wherever they land) could need: a block for each range without one between the
    /// lowest free cluster and the end of the allocation, and a grown table past the table's end.
    /// </summary>
    public long MetadataMarginFor(long clusters)
    {
        if (clusters <= 0) return 0;
        long last = Math.Max(AllocatedEnd >> _clusterBits, _freeHint) + clusters + 1;
        long firstTi = _freeHint / _entriesPerBlock, lastTi = last / _entriesPerBlock;
        long n = 0;
        for (long ti = firstTi; ti <= lastTi && ti < _table.Length; ti++)
            if (_table[ti] == 0) n++;
        if (lastTi >= _table.Length) n += lastTi - _table.Length + 1 + GrownTableClusters(lastTi + 1) + 1;
        return n;
    }

    private long GrownTableClusters(long minEntries)
    {
        long entries = Math.Max(minEntries + 1, _table.Length * 2L);
        return AlignUp(entries * 8) >> _clusterBits;
    }

    // A cluster with no refcount block has refcount 0: runs may span ranges whose blocks do
    // not exist yet; Allocate creates them (outside the run) when it sets the refcounts.
    /// <summary>The first run of <paramref name="count"/> free clusters (changes nothing but the search hint).</summary>
    public long FindFreeRun(int count)
    {
        long run = 0, start = _freeHint;
        for (long c = _freeHint; ; c++)
        {
            if (IsFree(c))
            {
                if (run == 0) start = c;
                if (++run == count) return start;
            }
            else
            {
                run = 0;
                if (c == _freeHint) _freeHint = c + 1;
            }
        }
    }

    private bool IsFree(long c) => c != 0 && !IsReserved(c) && !_quarantine.Contains(c) && Get(c) == 0;

    // Clusters in use before their own refcounts exist: a run being allocated, a refcount
    // table being moved, a refcount block being created.
    private readonly List<(long Start, long End)> _reserved = new();

    private bool IsReserved(long c)
    {
        foreach (var (start, end) in _reserved)
            if (c >= start && c < end) return true;
        return false;
    }

    private void EnsureBlock(long ti, List<MetadataRecord> records)
    {
        if (ti >= _table.Length) GrowTable(ti + 1, records);
        if (_table[ti] != 0) return;
        // With no block, every cluster of the range has refcount 0: the block takes the first
        // free one, inside its own range when it can, and so describes itself.
        long at = Math.Max(ti * _entriesPerBlock, 1);
        while (!IsFree(at)) at++;
        var offset = at << _clusterBits;
        // Written only at a checkpoint: take its space now (before anything changes), so that write
        // cannot meet a full disk; a full disk fails the allocation that needed the block instead.
        _device.ReserveSpace(offset, ClusterSize);
        _table[ti] = RefcountTableEntry.Create(offset).Raw;
        _blocks[ti] = new byte[ClusterSize];
        _tableDirty = true;
        _dirtyBlocks.Add(ti);
        Map?.Add(offset, ClusterSize, MetadataKind.RefcountBlock);
        records.Add(new NewTable(TableKind.RefcountBlock, offset, ClusterSize));
        records.Add(new SetRefcountTableEntry((int)ti, _table[ti]));
        AllocatedEnd = Math.Max(AllocatedEnd, offset + ClusterSize);
        _reserved.Add((at, at + 1));
        try
        {
            Set(at, 1, records);
        }
        finally
        {
            _reserved.RemoveAt(_reserved.Count - 1);
        }
    }

    private void GrowTable(long minEntries, List<MetadataRecord> records)
    {
        long entries = Math.Max(minEntries + 1, _table.Length * 2L);
        long bytes = AlignUp(entries * 8);
        if (bytes > Qcow2Header.MaxRefcountTableBytes)
            throw new IOException($"refcount table would exceed QEMU's limit of {Qcow2Header.MaxRefcountTableBytes} bytes: the image is full");
        int clusters = (int)(bytes >> _clusterBits);
        // Place the new table past everything allocated so far: those clusters cannot be in use.
        long newOffset = AllocatedEnd;
        _device.ReserveSpace(newOffset, bytes);
        var oldOffset = TableOffset;
        var oldClusters = TableClusters;
        var table = new ulong[bytes / 8];
        _table.CopyTo(table, 0);
        _table = table;
        TableOffset = newOffset;
        TableClusters = clusters;
        AllocatedEnd = newOffset + bytes;
        _tableDirty = true;
        Map?.Remove(oldOffset, (long)oldClusters << _clusterBits, MetadataKind.RefcountTable);
        Map?.Add(newOffset, bytes, MetadataKind.RefcountTable);
        records.Add(new NewTable(TableKind.RefcountTable, newOffset, bytes));
        for (int i = 0; i < _table.Length; i++)
            if (_table[i] != 0) records.Add(new SetRefcountTableEntry(i, _table[i]));
        records.Add(new SetHeaderField(HeaderField.RefcountTableOffset, (ulong)newOffset));
        records.Add(new SetHeaderField(HeaderField.RefcountTableClusters, (ulong)clusters));
        long firstCluster = newOffset >> _clusterBits;
        _reserved.Add((firstCluster, firstCluster + clusters));
        try
        {
            for (long c = firstCluster; c < firstCluster + clusters; c++) Set(c, 1, records);
        }
        finally
        {
            _reserved.RemoveAt(_reserved.Count - 1);
        }
        for (long c = oldOffset >> _clusterBits; c < (oldOffset >> _clusterBits) + oldClusters; c++) Adjust(c, -1, records);
    }

    private byte[] LoadBlock(long ti)
    {
        if (_blocks.TryGetValue(ti, out var block)) return block;
        long offset = (long)(_table[ti] & RefcountTableEntry.OffsetMask);
        block = new byte[ClusterSize];
        if (_device.Read(block, offset) < block.Length)
            throw new Qcow2ImageCorruptException($"refcount block {ti} at 0x{offset:X} lies past the end of {_device.Name}");
        _blocks[ti] = block;
        return block;
    }

    // ---- replay: apply absolute records without allocating anything ----

    public void ApplyNewTable(NewTable record)
    {
        if (record.Kind == TableKind.RefcountBlock)
        {
            for (int i = 0; i < _table.Length; i++)
            {
                if ((long)(_table[i] & RefcountTableEntry.OffsetMask) == record.Offset) { _blocks[i] = new byte[ClusterSize]; _dirtyBlocks.Add(i); }
            }
            _pendingNewBlocks.Add(record.Offset);
        }
        else if (record.Kind == TableKind.RefcountTable)
        {
            _table = new ulong[record.Length / 8];
            TableOffset = record.Offset;
            TableClusters = (int)(record.Length >> _clusterBits);
            _tableDirty = true;
        }
        AllocatedEnd = Math.Max(AllocatedEnd, record.Offset + record.Length);
    }

    private readonly HashSet<long> _pendingNewBlocks = new();

    public void ApplyTableEntry(SetRefcountTableEntry record)
    {
        if (record.Index >= _table.Length)
            throw new InvalidDataException($"journal sets refcount table entry {record.Index} beyond the table ({_table.Length} entries)");
        _table[record.Index] = record.Value;
        _tableDirty = true;
        long offset = (long)(record.Value & RefcountTableEntry.OffsetMask);
        if (_pendingNewBlocks.Remove(offset)) { _blocks[record.Index] = new byte[ClusterSize]; _dirtyBlocks.Add(record.Index); }
        // A clean cached block is reloaded from where the entry now points. A dirty one holds refcounts
        // replayed from earlier records (a grown table re-sets every entry, same blocks): dropping it lost
        // them and the write-back then failed on the missing block (found by the 026 fault matrix).
        else if (!_dirtyBlocks.Contains(record.Index)) _blocks.Remove(record.Index);
    }

    public void ApplyRefcount(SetRefcount record)
    {
        long ti = record.Cluster / _entriesPerBlock;
        if (ti >= _table.Length || _table[ti] == 0)
            throw new InvalidDataException($"journal sets the refcount of cluster {record.Cluster}, which no refcount block covers");
        RefcountBlock.Set(LoadBlock(ti), record.Cluster % _entriesPerBlock, _order, record.Value);
        _dirtyBlocks.Add(ti);
        AllocatedEnd = Math.Max(AllocatedEnd, (record.Cluster + 1) << _clusterBits);
    }

    /// <summary>Writes dirty blocks and the table in place (no flush). Returns true when anything was written.</summary>
    public bool WriteBack()
    {
        bool any = false;
        foreach (var ti in _dirtyBlocks.Order())
        {
            long offset = (long)(_table[ti] & RefcountTableEntry.OffsetMask);
            if (offset == 0) continue;
            if (Map?.CheckTable(offset, ClusterSize, MetadataKind.RefcountBlock) is { } problem) throw new Qcow2ImageCorruptException(problem);
            MetadataEvents.Raise(MetadataEvent.CheckpointWriteBack, _device.Name);
            _device.Write(_blocks[ti], offset);
            any = true;
        }
        _dirtyBlocks.Clear();
        if (_tableDirty)
        {
            var bytes = new byte[(long)TableClusters << _clusterBits];
            if (Map?.CheckTable(TableOffset, bytes.Length, MetadataKind.RefcountTable) is { } problem) throw new Qcow2ImageCorruptException(problem);
            for (int i = 0; i < _table.Length; i++) new RefcountTableEntry(_table[i]).Write(bytes, i);
            MetadataEvents.Raise(MetadataEvent.CheckpointWriteBack, _device.Name);
            _device.Write(bytes, TableOffset);
            _tableDirty = false;
            any = true;
        }
        return any;
    }

    private long AlignUp(long v) => (v + ClusterSize - 1) & ~(ClusterSize - 1);
}
