using Qcow2Actors.Engine.Read;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Write;

/// <summary>
/// The mapping policy of one L2 table, with no actor, no I/O and no clock: given the table's
/// entries and a request (write, write zeroes, discard, compressed write), it says which
/// clusters are written in place, which need new space and how that space is filled
/// (copy-on-write), which entries change and which host clusters lose a reference.
/// <see cref="L2TableActor"/> executes what it plans (device writes, journal records,
/// refcounts, publishing); the planner is property-tested on its own against a byte model.
/// </summary>
/// <remarks>
/// New references are set before old ones are released (the actor journals them in that
/// order), so a crash between the two leaves a leak, never a referenced cluster at refcount 0.
/// </remarks>
internal sealed class WritePlanner
{
    private readonly ImageGeometry _g;
    private readonly long _backingSize;

    /// <param name="geometry">The image's geometry.</param>
    /// <param name="backingSize">Size of the backing file in bytes, or -1 with none.</param>
    public WritePlanner(ImageGeometry geometry, long backingSize)
    {
        _g = geometry;
        _backingSize = backingSize;
    }

    /// <summary>True when the backing file has data under the guest cluster at <paramref name="clusterGuest"/>.</summary>
    public bool BackingHasData(long clusterGuest) => _backingSize >= 0 && clusterGuest < _backingSize;

    /// <summary>Host clusters an entry references (none with an external data file, where data lives at the guest offset).</summary>
    public IEnumerable<long> HostClusters(L2Entry e)
    {
        if (_g.ExternalDataFile) yield break;
        if (e.IsCompressed)
        {
            long start = e.CompressedHostOffset(_g.ClusterBits);
            long end = start + e.CompressedReadLength(_g.ClusterBits) - 1;
            // The last sector may end past the data; QEMU counts the clusters the sectors touch.
            for (long c = start >> _g.ClusterBits; c <= end >> _g.ClusterBits; c++) yield return c;
        }
        else if (e.HostOffset != 0)
        {
            yield return e.HostOffset >> _g.ClusterBits;
        }
    }

    /// <summary>True when the guest cluster reads as zeros and holds no data of its own (nothing to copy from it).</summary>
    public bool ReadsZeroWithoutData(L2Entry e, long clusterGuest)
    {
        var kind = e.GetKind(_g.Version, _g.ExtendedL2, _g.ExternalDataFile);
        if (_g.ExtendedL2 && kind is L2EntryKind.Normal or L2EntryKind.Unallocated)
        {
            for (int sc = 0; sc < 32; sc++)
            {
                var s = e.GetSubcluster(sc, _g.ExternalDataFile);
                if (s == SubclusterState.Allocated) return false;
                if (s == SubclusterState.Unallocated && BackingHasData(clusterGuest)) return false;
            }
            return true;
        }
        return kind switch
        {
            L2EntryKind.ZeroPlain or L2EntryKind.ZeroAllocated => true,
            L2EntryKind.Unallocated => !BackingHasData(clusterGuest),
            _ => false,
        };
    }

    /// <summary>
    /// The entries a shared table's copy gets: every entry that says anything, with COPIED cleared
    /// (its clusters stay shared with the snapshot, whose refcounts do not change).
    /// </summary>
    public List<EntryChange> CopiedTableEntries(TableEntries table, int entries)
    {
        var changes = new List<EntryChange>();
        for (int i = 0; i < entries; i++)
        {
            var e = table[i];
            if (e.IsCopied) changes.Add(new EntryChange(i, e.WithCopied(false), []));
            else if (e.Word0 != 0 || e.Bitmap != 0) changes.Add(new EntryChange(i, e, []));
        }
        return changes;
    }

    // ---------------------------------------------------------------- guest writes

    /// <summary>
    /// Plans a guest write of [<paramref name="offset"/>, <paramref name="end"/>) (inside this table's
    /// range) as steps in guest order. Steps that change the table assume that a shared table has
    /// been copied by the first of them, as the actor does.
    /// </summary>
    public List<WriteStep> PlanWrite(TableEntries table, long offset, long end)
    {
        var steps = new List<WriteStep>();
        bool copied = false;
        L2Entry Entry(int i) => copied ? table[i].WithCopied(false) : table[i];
        bool Shared() => table.Shared && !copied;
        long cs = _g.ClusterSize;
        long pos = offset;
        while (pos < end)
        {
            long clusterStart = pos & ~(cs - 1);
            int index = _g.L2Index(pos);
            var e = Entry(index);
            var kind = e.GetKind(_g.Version, _g.ExtendedL2, _g.ExternalDataFile);
            long chunkEnd = Math.Min(end, clusterStart + cs);
            WriteStep step;
            if (_g.ExternalDataFile)
            {
                // Host offset = guest offset: written through; the cluster is mapped once.
                step = new WriteStep(WriteStepKind.DataFile, pos, chunkEnd, index, clusterStart);
                if (_g.ExtendedL2 ? (e.AllocBits != uint.MaxValue || !e.IsCopied) : (kind != L2EntryKind.Normal || !e.IsCopied))
                {
                    uint touched = _g.SubclusterMask(pos, chunkEnd);
                    // The rest of a cluster mapped now must keep reading as it did (zeros or backing).
                    bool fill = !_g.ExtendedL2 && kind != L2EntryKind.Normal && chunkEnd - pos < cs;
                    step = step with
                    {
                        NewEntry = _g.ExtendedL2
                            ? L2Entry.Extended(clusterStart, true, e.AllocBits | touched, e.ZeroBits & ~touched)
                            : L2Entry.Standard(clusterStart, true),
                        FillRest = fill,
                        RestIsZero = fill && ReadsZeroWithoutData(e, clusterStart),
                    };
                }
            }
            else if (kind == L2EntryKind.Normal && e.IsCopied && !Shared())
            {
                uint touched = _g.SubclusterMask(pos, chunkEnd);
                if (e.CanWriteInPlace(_g.ExtendedL2, touched))
                {
                    step = new WriteStep(WriteStepKind.InPlace, pos, chunkEnd, index, clusterStart) { Host = e.HostOffset + (pos - clusterStart) };
                }
                else
                {
                    // Extended: the cluster is ours; write only the touched subclusters and mark them allocated.
                    step = new WriteStep(WriteStepKind.Subclusters, pos, chunkEnd, index, clusterStart)
                    {
                        Host = e.HostOffset,
                        NewEntry = L2Entry.Extended(e.HostOffset, true, e.AllocBits | touched, e.ZeroBits & ~touched),
                    };
                }
            }
            else if (kind == L2EntryKind.ZeroAllocated && e.IsCopied && !Shared())
            {
                // A preallocated zero cluster we own: reuse it, zero-filling around the data.
                step = new WriteStep(WriteStepKind.ReuseZeroAllocated, pos, chunkEnd, index, clusterStart)
                {
                    Host = e.HostOffset,
                    NewEntry = L2Entry.Standard(e.HostOffset, true),
                };
            }
            else
            {
                // Needs a new cluster: the run of consecutive clusters that do is allocated
                // contiguously and written with as few device writes as possible.
                long runEnd = chunkEnd;
                while (runEnd < end && NeedsNewCluster(Entry(_g.L2Index(runEnd)), Shared())) runEnd = Math.Min(end, runEnd + cs);
                long runEndCluster = (runEnd + cs - 1) & ~(cs - 1);
                step = new WriteStep(WriteStepKind.Allocate, pos, runEnd, index, clusterStart) { Count = (int)((runEndCluster - clusterStart) / cs) };
                chunkEnd = runEnd;
            }
            steps.Add(step);
            if (step.ChangesTable && table.Shared) copied = true;
            pos = chunkEnd;
        }
        return steps;
    }

    /// <summary>
    /// How many new host clusters a guest write of [<paramref name="offset"/>, <paramref name="end"/>)
    /// takes (before refcount metadata): its allocating runs, and the table itself when it must be
    /// created or copied. What a quota reserves before the write maps anything.
    /// </summary>
    public long NewClustersForWrite(TableEntries table, long offset, long end)
    {
        long n = 0;
        bool changes = false;
        foreach (var step in PlanWrite(table, offset, end))
        {
            if (step.Kind == WriteStepKind.Allocate) n += step.Count;
            changes |= step.ChangesTable;
        }
        return n + (changes && (table.Missing || table.Shared) ? 1 : 0);
    }

    /// <summary>
    /// At most how many new host clusters a write-zeroes of [<paramref name="offset"/>, +<paramref name="length"/>)
    /// takes: chunks written as data (partial clusters, or what the format cannot say in metadata) and the table.
    /// </summary>
    public long NewClustersForZero(TableEntries table, long offset, long length, bool unmap)
    {
        long n = 0;
        bool changes = false;
        foreach (var chunk in PlanZero(offset, length))
        {
            if (chunk.ByMetadata)
            {
                var decision = PlanZeroCluster(table, chunk.ClusterStart, chunk.From, chunk.To, unmap);
                if (decision.Kind == ZeroDecisionKind.Unchanged) continue;
                if (decision.Kind == ZeroDecisionKind.Set) { changes = true; continue; }
            }
            foreach (var step in PlanWrite(table, chunk.From, chunk.To))
            {
                if (step.Kind == WriteStepKind.Allocate) n += step.Count;
                changes |= step.ChangesTable;
            }
        }
        return n + (changes && (table.Missing || table.Shared) ? 1 : 0);
    }

    private bool NeedsNewCluster(L2Entry e, bool shared)
    {
        if (shared) return true;
        var kind = e.GetKind(_g.Version, _g.ExtendedL2, _g.ExternalDataFile);
        if (kind == L2EntryKind.Normal && e.IsCopied) return false;
        if (kind == L2EntryKind.ZeroAllocated && e.IsCopied) return false;
        return true;
    }

    /// <summary>
    /// How a newly allocated run for guest clusters [runStart, runStart + count clusters) is filled
    /// around the data [<paramref name="dataStart"/>, <paramref name="dataEnd"/>); <paramref name="fresh"/>
    /// space is known to read as zeros. <paramref name="table"/> is the (writable) table before the run is mapped.
    /// </summary>
    public FillPlan PlanFill(TableEntries table, long runStart, int count, long dataStart, long dataEnd, bool fresh)
    {
        long cs = _g.ClusterSize;
        long runBytes = count * cs;
        bool headPartial = dataStart != runStart;
        bool tailPartial = dataEnd != runStart + runBytes;
        if (!headPartial && !tailPartial) return new FillPlan(FillKind.DataOnly, dataStart, dataEnd, false, false, true, true);
        // For extended L2 entries that were unallocated, only the touched subclusters are written.
        if (_g.ExtendedL2)
        {
            long sc = _g.SubclusterSize;
            bool allFromUnallocated = true;
            for (long c = runStart; c < runStart + runBytes; c += cs)
                allFromUnallocated &= table[_g.L2Index(c)].GetKind(_g.Version, true) == L2EntryKind.Unallocated;
            if (allFromUnallocated)
                return new FillPlan(FillKind.Subclusters, dataStart & ~(sc - 1), (dataEnd + sc - 1) & ~(sc - 1), headPartial, tailPartial, false, false);
        }
        bool headZero = !headPartial || ReadsZeroWithoutData(table[_g.L2Index(runStart)], runStart);
        bool tailZero = !tailPartial || ReadsZeroWithoutData(table[_g.L2Index(runStart + runBytes - cs)], runStart + runBytes - cs);
        // Fresh clusters read as zeros already: write only the data.
        if (fresh && headZero && tailZero) return new FillPlan(FillKind.DataOnly, dataStart, dataEnd, headPartial, tailPartial, true, true);
        return new FillPlan(FillKind.Buffer, runStart, runStart + runBytes, headPartial, tailPartial, headZero, tailZero);
    }

    /// <summary>
    /// The entries that map a run allocated at <paramref name="hostOffset"/> for guest clusters from
    /// <paramref name="runStart"/>, with data [<paramref name="dataStart"/>, <paramref name="dataEnd"/>),
    /// and what each old entry referenced.
    /// </summary>
    public List<EntryChange> MapAllocated(TableEntries table, long runStart, int count, long dataStart, long dataEnd, long hostOffset)
    {
        long cs = _g.ClusterSize;
        var changes = new List<EntryChange>(count);
        for (int k = 0; k < count; k++)
        {
            long guest = runStart + k * cs;
            int i = _g.L2Index(guest);
            var old = table[i];
            long host = hostOffset + k * cs;
            L2Entry entry;
            if (_g.ExtendedL2)
            {
                long s = Math.Max(dataStart, guest), t = Math.Min(dataEnd, guest + cs);
                if (old.GetKind(_g.Version, true) == L2EntryKind.Unallocated)
                {
                    uint touched = _g.SubclusterMask(s, t);
                    entry = L2Entry.Extended(host, true, touched, old.ZeroBits & ~touched);
                }
                else entry = L2Entry.Extended(host, true, uint.MaxValue, 0); // copied whole
            }
            else entry = L2Entry.Standard(host, true);
            changes.Add(new EntryChange(i, entry, [.. HostClusters(old)]));
        }
        return changes;
    }

    /// <summary>The entry of a compressed cluster stored at <paramref name="hostOffset"/>, replacing the entry of guest cluster <paramref name="guest"/>.</summary>
    public EntryChange MapCompressed(TableEntries table, long guest, long hostOffset, int length)
    {
        int i = _g.L2Index(guest);
        return new EntryChange(i, L2Entry.Compressed(hostOffset, length, _g.ClusterBits), [.. HostClusters(table[i])]);
    }

    // ---------------------------------------------------------------- zeroes, discard

    /// <summary>Splits a write-zeroes request into chunks of at most a cluster, each zeroed in metadata when it can be.</summary>
    public List<ZeroChunk> PlanZero(long offset, long length)
    {
        var chunks = new List<ZeroChunk>();
        long cs = _g.ClusterSize;
        long end = offset + length;
        for (long pos = offset; pos < end;)
        {
            long clusterStart = pos & ~(cs - 1);
            long chunkEnd = Math.Min(end, clusterStart + cs);
            bool whole = pos == clusterStart && chunkEnd == clusterStart + cs;
            long unit = _g.ExtendedL2 ? _g.SubclusterSize : cs;
            bool byMetadata = !_g.ExternalDataFile && (whole || (_g.ExtendedL2 && ((pos | chunkEnd) & (unit - 1)) == 0));
            chunks.Add(new ZeroChunk(clusterStart, pos, chunkEnd, byMetadata));
            pos = chunkEnd;
        }
        return chunks;
    }

    /// <summary>Zeroes a whole cluster (or whole subclusters) [from, to) in metadata, or says the format cannot express it.</summary>
    public ZeroDecision PlanZeroCluster(TableEntries table, long clusterStart, long from, long to, bool unmap)
    {
        int index = _g.L2Index(clusterStart);
        var e = table[index];
        var kind = e.GetKind(_g.Version, _g.ExtendedL2);
        var release = new List<long>();
        L2Entry next;
        if (_g.ExtendedL2)
        {
            uint touched = _g.SubclusterMask(from, to);
            if (kind == L2EntryKind.Compressed)
            {
                if (touched != uint.MaxValue) return new ZeroDecision(ZeroDecisionKind.WriteData, default);
                next = L2Entry.Extended(0, false, 0, uint.MaxValue);
                release.AddRange(HostClusters(e));
            }
            else
            {
                uint alloc = e.AllocBits & ~touched;
                uint zero = e.ZeroBits | touched;
                long host = e.HostOffset;
                bool owned = e.IsCopied && !table.Shared;
                if (host != 0 && ((unmap && alloc == 0) || !owned))
                {
                    // A shared cluster with data left needs copy-on-write: write zeros as data.
                    if (!owned && alloc != 0) return new ZeroDecision(ZeroDecisionKind.WriteData, default);
                    release.AddRange(HostClusters(e));
                    host = 0;
                }
                next = host == 0 ? L2Entry.Extended(0, false, 0, zero) : L2Entry.Extended(host, true, alloc, zero);
            }
        }
        else
        {
            bool zeroAlready = ReadsZeroWithoutData(e, clusterStart) && kind != L2EntryKind.Normal;
            if (_g.Version < 3)
            {
                if (BackingHasData(clusterStart)) return new ZeroDecision(ZeroDecisionKind.WriteData, default);
                if (!unmap && kind == L2EntryKind.Normal && e.IsCopied) return new ZeroDecision(ZeroDecisionKind.WriteData, default);
                if (kind == L2EntryKind.Unallocated) return new ZeroDecision(ZeroDecisionKind.Unchanged, default);
                next = default;
            }
            else if (!unmap && (kind is L2EntryKind.Normal or L2EntryKind.ZeroAllocated) && e.IsCopied && !table.Shared)
            {
                next = L2Entry.Zero(e.HostOffset, copied: true); // keep the space, as asked
            }
            else
            {
                if (zeroAlready && kind == L2EntryKind.ZeroPlain) return new ZeroDecision(ZeroDecisionKind.Unchanged, default);
                next = L2Entry.Zero();
            }
            if (next.HostOffset == 0) release.AddRange(HostClusters(e));
        }
        if (next == e) return new ZeroDecision(ZeroDecisionKind.Unchanged, default);
        return new ZeroDecision(ZeroDecisionKind.Set, new EntryChange(index, next, [.. release]));
    }

    /// <summary>
    /// Discards the whole clusters inside [offset, offset + length) (discard is advisory: partial
    /// clusters stay). As QEMU: a discarded cluster reads as zeros in v3 even where it was
    /// unallocated over a backing file (v2 cannot say so, and shows the backing file again).
    /// With <paramref name="deallocate"/> (QEMU's full discard, as qemu-img commit empties the top
    /// image) every cluster the range touches becomes unallocated, reading from the backing file
    /// again; the range is then the whole disk, so a last partial cluster goes too.
    /// </summary>
    public List<EntryChange> PlanDiscard(TableEntries table, long offset, long length, bool deallocate = false)
    {
        long cs = _g.ClusterSize;
        var changes = new List<EntryChange>();
        long end = deallocate ? (offset + length + cs - 1) & ~(cs - 1) : offset + length;
        for (long c = (offset + cs - 1) & ~(cs - 1); c + cs <= end; c += cs)
        {
            int index = _g.L2Index(c);
            var e = table[index];
            L2Entry next = !deallocate && BackingHasData(c)
                ? (_g.ExtendedL2 ? L2Entry.Extended(0, false, 0, uint.MaxValue) : _g.Version >= 3 ? L2Entry.Zero() : default)
                : default;
            if (next == e) continue;
            changes.Add(new EntryChange(index, next, [.. HostClusters(e)]));
        }
        return changes;
    }

    /// <summary>
    /// Discard with an external data file, as QEMU does it: every whole cluster in the range that
    /// reads anything but zeros gets a zero entry (whatever lies below); its data-file range is
    /// punched once that is durable. Returns the changed entries (their guest cluster offsets follow from the index).
    /// </summary>
    public List<EntryChange> PlanDataFileDiscard(TableEntries table, long offset, long length)
    {
        long cs = _g.ClusterSize;
        var changes = new List<EntryChange>();
        L2Entry zero = _g.ExtendedL2 ? L2Entry.Extended(0, false, 0, uint.MaxValue) : L2Entry.Zero();
        for (long c = (offset + cs - 1) & ~(cs - 1); c + cs <= offset + length; c += cs)
        {
            int index = _g.L2Index(c);
            var e = table[index];
            var kind = e.GetKind(_g.Version, _g.ExtendedL2, true);
            if (e == zero || (kind == L2EntryKind.Unallocated && (!_g.ExtendedL2 || e.Bitmap == 0) && !BackingHasData(c))) continue;
            changes.Add(new EntryChange(index, zero, []));
        }
        return changes;
    }
}
