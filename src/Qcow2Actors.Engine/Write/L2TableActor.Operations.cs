using Akka.Actor;
using Akka.Event;
using System.Buffers;
using Qcow2Actors.Engine.Metadata;
using Qcow2Actors.Engine.Read;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Write;

// The operations of an L2 table actor: its table state (load, copy-on-write of a shared table,
// publish, commit) and the execution of what the WritePlanner decides (device writes, journal
// records, refcount changes). The policy itself lives in WritePlanner; the lifecycle
// (mailbox states, passivation, write-back) in L2TableActor.cs.
internal sealed partial class L2TableActor
{
    private WritePlanner? _planner;

    private WritePlanner Planner => _planner ??= new WritePlanner(_g, _ctx.Backing?.Size ?? -1);

    private TableEntries Table => new(_words, _g.ExtendedL2, _tableShared);

    private RefcountAllocator Refcounts => _ctx.Allocator!;

    // The quota reservation of the operation running now (null without a quota), and whether it is a
    // discard (which may take the table it needs whatever the limit).
    private SpaceReservation? _space;
    private bool _unlimited;

    /// <summary>
    /// With a quota: holds the clusters this operation will take (as planned on the table now, plus
    /// the refcount metadata they could need) before anything is mapped, or refuses the whole operation.
    /// </summary>
    private void EnsureQuota(long newClusters)
    {
        if (_space is not { } space || newClusters == 0) return;
        long clusters = newClusters + Refcounts.MetadataMarginFor(newClusters);
        if (!space.TryEnsure(clusters * _g.ClusterSize, _unlimited))
            throw space.Quota.Refusal(_ctx.Path, clusters * _g.ClusterSize);
    }

    // ---------------------------------------------------------------- table state

    private void SetEntry(int i, L2Entry e, List<MetadataRecord> records)
    {
        if (_g.ExtendedL2) { _words![2 * i] = e.Word0; _words[2 * i + 1] = e.Bitmap; }
        else
        {
            _words![i] = e.Word0;
            _staged.Add(i);
        }
        _dirty = true;
        records.Add(new SetL2Entry(_tableOffset, i, e.Word0, _g.ExtendedL2 ? e.Bitmap : 0));
    }

    private void Apply(EntryChange change, List<MetadataRecord> records, List<long> release)
    {
        release.AddRange(change.Release);
        SetEntry(change.Index, change.Entry, records);
    }

    private async Task LoadAsync()
    {
        if (_words is not null) return;
        ulong l1 = _ctx.L1Entry(_l1Index);
        var entry = new L1Entry(l1);
        _tableOffset = entry.L2Offset;
        if (_tableOffset == 0) return;
        _tableShared = !entry.IsCopied;
        var view = await _ctx.Layer.GetL2Async(_ctx.Layer.Views.Current, (long)_l1Index << _g.L2CoverageBits, default);
        _words = view!.CopyWords();
    }

    /// <summary>Makes sure this actor owns a writable table: allocates a new one or copies a shared one.</summary>
    private async Task<bool> EnsureWritableTableAsync(List<MetadataRecord> records, List<long> release)
    {
        await LoadAsync();
        if (_words is not null && !_tableShared) return false;
        var alloc = Refcounts.Allocate(1, _space, _unlimited);
        try
        {
            // The table reaches its cluster only at a checkpoint: its space is taken now, so that
            // write cannot meet a full disk.
            _ctx.Device.ReserveSpace(alloc.Offset, _g.ClusterSize);
        }
        catch (Qcow2NoSpaceException)
        {
            Refcounts.Free([alloc.Offset >> _g.ClusterBits]);
            throw;
        }
        long oldOffset = _tableOffset;
        var copies = _tableShared ? Planner.CopiedTableEntries(Table, _entries) : null;
        _words = _words is null ? new ulong[_g.ExtendedL2 ? 2 * _entries : _entries] : (ulong[])_words.Clone();
        _tableOffset = alloc.Offset;
        _ctx.CheckDataWrite(alloc.Offset, _g.ClusterSize);
        _ctx.Metadata.Add(alloc.Offset, _g.ClusterSize, MetadataKind.L2Table);
        records.Add(new NewTable(TableKind.L2, alloc.Offset, _g.ClusterSize));
        if (copies is not null)
        {
            // A shared table is counted once per L1 that reaches it, and so are its data
            // clusters: moving the active L1's path to a copy leaves every data refcount as it
            // is and only drops the old table's count by one.
            foreach (var change in copies) Apply(change, records, release);
            release.Add(oldOffset >> _g.ClusterBits);
            // Readers must not find the old table by its offset once the cluster is reused.
            _ctx.Layer.L2Tables.Invalidate(oldOffset);
            _ctx.Metadata.Remove(oldOffset, _g.ClusterSize, MetadataKind.L2Table);
            _tableShared = false;
        }
        _dirty = true;
        return true;
    }

    private void Publish(bool newTable)
    {
        if (_words is null) return;
        var cache = _ctx.Layer.L2Tables;
        if (_pinnedOffset != _tableOffset)
        {
            cache.Pin(_tableOffset);
            _pinnedOffset = _tableOffset;
            // Writes reach this actor without the image actor seeing them (TableRoutes): it learns here that dirty tables outgrew the cache.
            if (cache.PinnedCount > _ctx.Settings.L2CacheSize) _parent.Tell(TablesOverCache.Instance);
        }
        if (_g.ExtendedL2)
        {
            // Extended entries are two words: a reader must never see one new and one old, so publish a copy.
            cache.Publish(new L2View(_tableOffset, (ulong[])_words.Clone(), true));
        }
        else
        {
            // Standard entries are one aligned word each, stored atomically: the published array is
            // copied once per table and then only the entries an operation changed are stored into it,
            // instead of a 64 KiB copy per allocating write.
            if (_view is null || !ReferenceEquals(_pubSource, _words) || _view.HostOffset != _tableOffset)
            {
                _pub = (ulong[])_words.Clone();
                _pubSource = _words;
                _view = new L2View(_tableOffset, _pub, false);
            }
            else
            {
                foreach (int i in _staged) Volatile.Write(ref _pub![i], _words[i]);
            }
            if (!cache.IsCurrent(_tableOffset, _view)) cache.Publish(_view);
        }
        _staged.Clear();
        if (newTable)
        {
            // Only after the table's view is in the cache may readers find it through L1.
            _ctx.PublishL1Entry(_l1Index, L1Entry.Create(_tableOffset, copied: true).Raw);
        }
    }

    private void Commit(bool newTable, List<MetadataRecord> records, List<long> release)
    {
        if (newTable && _words is not null) records.Add(new SetL1Entry(_l1Index, L1Entry.Create(_tableOffset, copied: true).Raw));
        // Records first, then readers (and the owned-cluster fast path) may see the new entries: a write
        // that completes through a newly visible mapping is then always covered by the next flush.
        if (records.Count > 0) _ctx.JournalRecords.Append(records);
        Publish(newTable);
        // Releases go out after the records that drop the references (same thread, same journal: ordered).
        Refcounts.Free(release);
    }

    // ---------------------------------------------------------------- guest writes

    private async Task WriteAsync(long offset, ReadOnlyMemory<byte> data)
    {
        await LoadAsync();
        if (_space is not null) EnsureQuota(Planner.NewClustersForWrite(Table, offset, offset + data.Length));
        var records = new List<MetadataRecord>();
        var release = new List<long>();
        bool newTable = false;
        try
        {
            newTable = await WriteClustersAsync(offset, data, records, release);
        }
        catch (Exception) when (records.Count > 0)
        {
            // The clusters written before the failure are mapped and their refcounts journaled:
            // commit them, so the table in memory and the journal agree (the write failed as a whole).
            Commit(_words is not null && new L1Entry(_ctx.L1Entry(_l1Index)).L2Offset != _tableOffset, records, release);
            throw;
        }
        Commit(newTable, records, release);
    }

    /// <summary>Executes the planner's steps for a guest write, in guest order.</summary>
    private async Task<bool> WriteClustersAsync(long offset, ReadOnlyMemory<byte> data, List<MetadataRecord> records, List<long> release)
    {
        bool newTable = false;
        foreach (var step in Planner.PlanWrite(Table, offset, offset + data.Length))
        {
            var slice = data.Slice((int)(step.From - offset), (int)(step.To - step.From));
            switch (step.Kind)
            {
                case WriteStepKind.DataFile:
                    // The cluster holds data again: a punch still waiting for its discard to be durable must not run.
                    _dataPunches.Remove(step.ClusterStart);
                    await _ctx.DataDevice!.WriteAsync(slice, step.From);
                    if (step.NewEntry is { } mapped)
                    {
                        newTable |= await EnsureWritableTableAsync(records, release);
                        if (step.FillRest) await FillDataFileAsync(step.ClusterStart, step.From, step.To, step.RestIsZero);
                        SetEntry(step.Index, mapped, records);
                    }
                    break;
                case WriteStepKind.InPlace:
                    // A cluster we own is overwritten in place: unless its entry points at metadata.
                    _ctx.CheckDataWrite(step.Host, step.To - step.From);
                    await _ctx.Device.WriteAsync(slice, step.Host);
                    break;
                case WriteStepKind.Subclusters:
                    await WriteSubclustersAsync(step.Host, step.ClusterStart, step.From, step.To, slice);
                    newTable |= await EnsureWritableTableAsync(records, release);
                    SetEntry(step.Index, step.NewEntry!.Value, records);
                    break;
                case WriteStepKind.ReuseZeroAllocated:
                {
                    var buf = new byte[_g.ClusterSize];
                    slice.Span.CopyTo(buf.AsSpan((int)(step.From - step.ClusterStart)));
                    _ctx.CheckDataWrite(step.Host, _g.ClusterSize);
                    await _ctx.Device.WriteAsync(buf, step.Host);
                    newTable |= await EnsureWritableTableAsync(records, release);
                    SetEntry(step.Index, step.NewEntry!.Value, records);
                    break;
                }
                case WriteStepKind.Allocate:
                {
                    newTable |= await EnsureWritableTableAsync(records, release);
                    var alloc = Refcounts.Allocate(step.Count, _space, _unlimited);
                    _ctx.CheckDataWrite(alloc.Offset, step.Count * _g.ClusterSize);
                    try
                    {
                        await WriteNewClustersAsync(Planner.PlanFill(Table, step.ClusterStart, step.Count, step.From, step.To, alloc.Fresh),
                            alloc.Offset, step.ClusterStart, step.From, slice);
                    }
                    catch (Exception)
                    {
                        // Nothing maps the run yet: give it back (a full disk must not leak the clusters it refused).
                        long first = alloc.Offset >> _g.ClusterBits;
                        Refcounts.Free([.. Enumerable.Range(0, step.Count).Select(k => first + k)]);
                        throw;
                    }
                    foreach (var change in Planner.MapAllocated(Table, step.ClusterStart, step.Count, step.From, step.To, alloc.Offset))
                        Apply(change, records, release);
                    break;
                }
            }
        }
        return newTable;
    }

    /// <summary>Writes a newly allocated run at <paramref name="host"/> as <paramref name="fill"/> says.</summary>
    private async Task WriteNewClustersAsync(FillPlan fill, long host, long runStart, long dataStart, ReadOnlyMemory<byte> data)
    {
        long cs = _g.ClusterSize;
        switch (fill.Kind)
        {
            case FillKind.DataOnly:
                await _ctx.Device.WriteAsync(data, host + (dataStart - runStart));
                return;
            case FillKind.Subclusters:
            {
                var part = new byte[fill.To - fill.From];
                if (fill.From != dataStart || fill.To != dataStart + data.Length)
                    await CowReadAsync(_ctx.Layer.Views.Current, fill.From, part, default);
                data.Span.CopyTo(part.AsSpan((int)(dataStart - fill.From)));
                await _ctx.Device.WriteAsync(part, host + (fill.From - runStart));
                return;
            }
        }
        long runBytes = fill.To - fill.From;
        var buffer = ArrayPool<byte>.Shared.Rent((int)runBytes);
        try
        {
            var mem = buffer.AsMemory(0, (int)runBytes);
            var view = _ctx.Layer.Views.Current;
            if (fill.HeadPartial)
            {
                if (fill.HeadZero) mem.Span[..(int)cs].Clear();
                else await CowReadAsync(view, runStart, mem[..(int)cs], default);
            }
            if (fill.TailPartial && (runBytes > cs || !fill.HeadPartial))
            {
                var tail = mem[(int)(runBytes - cs)..];
                if (fill.TailZero) tail.Span.Clear();
                else await CowReadAsync(view, runStart + runBytes - cs, tail, default);
            }
            data.Span.CopyTo(mem.Span[(int)(dataStart - runStart)..]);
            await _ctx.Device.WriteAsync(mem, host);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private async Task WriteSubclustersAsync(long host, long clusterStart, long pos, long chunkEnd, ReadOnlyMemory<byte> data)
    {
        long sc = _g.SubclusterSize;
        long s = pos & ~(sc - 1), t = (chunkEnd + sc - 1) & ~(sc - 1);
        var part = new byte[t - s];
        if (s != pos || t != chunkEnd)
            await CowReadAsync(_ctx.Layer.Views.Current, s, part, default);
        data.Span.CopyTo(part.AsSpan((int)(pos - s)));
        _ctx.CheckDataWrite(host + (s - clusterStart), part.Length);
        await _ctx.Device.WriteAsync(part, host + (s - clusterStart));
    }

    /// <summary>Reads the old data a partial-cluster write copies (the <see cref="MetadataEvent.CowRead"/> event).</summary>
    private ValueTask CowReadAsync(Read.ImageView view, long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        MetadataEvents.Raise(MetadataEvent.CowRead, _ctx.Path);
        return _ctx.Layer.ReadAsync(view, offset, buffer, cancellationToken);
    }

    private async Task FillDataFileAsync(long clusterStart, long pos, long chunkEnd, bool restIsZero)
    {
        long cs = _g.ClusterSize;
        var buf = new byte[cs];
        if (!restIsZero) await CowReadAsync(_ctx.Layer.Views.Current, clusterStart, buf, default);
        if (pos > clusterStart) await _ctx.DataDevice!.WriteAsync(buf.AsMemory(0, (int)(pos - clusterStart)), clusterStart);
        long tail = clusterStart + cs - chunkEnd;
        if (tail > 0) await _ctx.DataDevice!.WriteAsync(buf.AsMemory((int)(chunkEnd - clusterStart), (int)tail), chunkEnd);
    }

    // ---------------------------------------------------------------- zeroes, discard, compressed

    private async Task ZeroAsync(long offset, long length, bool unmap)
    {
        await LoadAsync();
        if (_space is not null) EnsureQuota(Planner.NewClustersForZero(Table, offset, length, unmap));
        foreach (var chunk in Planner.PlanZero(offset, length))
        {
            if (!chunk.ByMetadata || !await ZeroByMetadataAsync(chunk, unmap))
                await WriteAsync(chunk.From, new byte[chunk.To - chunk.From]);
        }
    }

    /// <summary>Zeroes a whole cluster (or whole subclusters) in metadata; false when the format cannot express it.</summary>
    private async Task<bool> ZeroByMetadataAsync(ZeroChunk chunk, bool unmap)
    {
        var decision = Planner.PlanZeroCluster(Table, chunk.ClusterStart, chunk.From, chunk.To, unmap);
        if (decision.Kind == ZeroDecisionKind.WriteData) return false;
        if (decision.Kind == ZeroDecisionKind.Unchanged) return true;
        var records = new List<MetadataRecord>();
        var release = new List<long>();
        bool newTable = await EnsureWritableTableAsync(records, release);
        Apply(decision.Change, records, release);
        Commit(newTable, records, release);
        return true;
    }

    private async Task DiscardAsync(long offset, long length, bool deallocate)
    {
        await LoadAsync();
        if (_words is null && (deallocate || !Planner.BackingHasData((long)_l1Index << _g.L2CoverageBits))) return;
        if (_g.ExternalDataFile)
        {
            await DiscardDataFileAsync(offset, length);
            return;
        }
        var records = new List<MetadataRecord>();
        var release = new List<long>();
        bool newTable = false;
        foreach (var change in Planner.PlanDiscard(Table, offset, length, deallocate))
        {
            newTable |= await EnsureWritableTableAsync(records, release);
            Apply(change, records, release);
        }
        Commit(newTable, records, release);
    }

    /// <summary>
    /// Discard with an external data file, as QEMU does it: the cluster reads as zeros from now on
    /// (a zero entry, whatever lies below), and its data-file range is punched once that is durable.
    /// </summary>
    private async Task DiscardDataFileAsync(long offset, long length)
    {
        var records = new List<MetadataRecord>();
        var release = new List<long>();
        var punch = new List<long>();
        bool newTable = false;
        long tableStart = (long)_l1Index << _g.L2CoverageBits;
        foreach (var change in Planner.PlanDataFileDiscard(Table, offset, length))
        {
            newTable |= await EnsureWritableTableAsync(records, release);
            Apply(change, records, release);
            punch.Add(tableStart + ((long)change.Index << _g.ClusterBits));
        }
        if (records.Count == 0) return;
        if (newTable && _words is not null) records.Add(new SetL1Entry(_l1Index, L1Entry.Create(_tableOffset, copied: true).Raw));
        var durable = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _ctx.JournalRecords.Append(records, durable: durable);
        Publish(newTable);
        Refcounts.Free(release);
        foreach (var c in punch) _dataPunches[c] = durable.Task;
        var self = _self;
        _ = durable.Task.ContinueWith(_ => self.Tell(new PunchDataClusters()), CancellationToken.None,
            TaskContinuationOptions.OnlyOnRanToCompletion | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    /// <summary>Punches the data-file range of every discarded cluster whose discard is durable and that no write mapped again.</summary>
    private void PunchDurableDataClusters()
    {
        if (_dataPunches.Count == 0 || _ctx.DataDevice is not { } data) return;
        long cs = _g.ClusterSize;
        foreach (var (cluster, durable) in _dataPunches.ToList())
        {
            if (!durable.IsCompletedSuccessfully) continue;
            _dataPunches.Remove(cluster);
            try
            {
                data.PunchHole(cluster, cs);
            }
            catch (Exception ex) when (ex is IOException or ObjectDisposedException)
            {
                // Only space is lost: the entry already reads as zeros.
                _log.Warning("'{0}': could not punch discarded data at {1} in the data file: {2}", _ctx.Path, cluster, ex.Message);
            }
        }
    }

    private async Task WriteCompressedAsync(long offset, ReadOnlyMemory<byte> cluster)
    {
        long cs = _g.ClusterSize;
        if ((offset & (cs - 1)) != 0 || cluster.Length != cs || _g.ExternalDataFile)
            throw new ArgumentException("compressed writes take exactly one whole, aligned cluster (and no external data file)");
        var output = ArrayPool<byte>.Shared.Rent((int)cs);
        try
        {
            if (!_ctx.Codec.TryCompress(cluster.Span, output.AsSpan(0, (int)cs), out int written))
            {
                await WriteAsync(offset, cluster);
                return;
            }
            await LoadAsync();
            var records = new List<MetadataRecord>();
            var release = new List<long>();
            EnsureQuota((written + _g.ClusterSize - 1) / _g.ClusterSize + (Table.Missing || Table.Shared ? 1 : 0));
            bool newTable = await EnsureWritableTableAsync(records, release);
            long at = Refcounts.AllocateCompressed(written, _space);
            _ctx.CheckDataWrite(at, written);
            await _ctx.Device.WriteAsync(output.AsMemory(0, written), at);
            // The read side remembers the last decompressed cluster by host offset, which this may reuse.
            _ctx.Layer.ForgetDecompressed();
            Apply(Planner.MapCompressed(Table, offset, at, written), records, release);
            Commit(newTable, records, release);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(output);
        }
    }
}
