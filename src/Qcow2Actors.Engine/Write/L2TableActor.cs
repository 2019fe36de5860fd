using System.Buffers;
using Akka.Actor;
using Akka.Event;
using Qcow2Actors.Engine.Metadata;
using Qcow2Actors.Engine.Read;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Write;

/// <summary>
/// One per L2 table (one per active L1 entry): serializes every mapping change of its
/// table — allocation, copy-on-write, zeroing, discard, subcluster bits, compressed
/// clusters — by running one operation at a time, and publishes an immutable view of the
/// table to the read side after each one. New references are journaled before old ones
/// are released, so a crash between the two leaves a leak (repaired on recovery), never a
/// cluster that is referenced with a refcount of zero.
/// </summary>
// No ConfigureAwait(false) in this actor: continuations of ReceiveAsync handlers must
// resume on the actor's context (Akka suspends the mailbox until the handler completes).
internal sealed class L2TableActor : ReceiveActor, IWithUnboundedStash
{
    private readonly ImageContext _ctx;
    private readonly int _l1Index;
    private readonly ImageGeometry _g;
    private readonly int _entries;
    private long _tableOffset;
    private ulong[]? _words;
    private bool _dirty;
    private bool _tableShared;
    // Standard L2: the array readers see (_pub, wrapped by _view), copied from _words once per table;
    // _staged lists the entries changed since the last publish.
    private L2View? _view;
    private ulong[]? _pub;
    private ulong[]? _pubSource;
    private readonly List<int> _staged = new();
    private long _pinnedOffset = -1;
    // External data file: discarded guest clusters whose data-file range is punched once the discard
    // is durable, unless a write maps the cluster again first (keyed by guest cluster offset).
    private readonly Dictionary<long, Task> _dataPunches = new();
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly BlockingIo _io = BlockingIo.For(Context.System);

    public L2TableActor(ImageContext ctx, int l1Index)
    {
        _ctx = ctx;
        _l1Index = l1Index;
        _g = ctx.Geometry;
        _entries = _g.L2Entries;
        // Idle passivation is the parent's (ImageActor, on the engine's TimeProvider): it sends StopIfClean.
        Active();
    }

    public IStash Stash { get; set; } = null!;

    public static Props Props(ImageContext ctx, int l1Index) => Akka.Actor.Props.Create(() => new L2TableActor(ctx, l1Index));

    private void Active()
    {
        ReceiveAsync<WriteOp>(m => Guard(m.Done, false, () => WriteAsync(m.Offset, m.Data)));
        ReceiveAsync<ZeroOp>(m => Guard(m.Done, m.Unmap, () => ZeroAsync(m.Offset, m.Length, m.Unmap)));
        ReceiveAsync<DiscardOp>(m => Guard(m.Done, true, () => DiscardAsync(m.Offset, m.Length)));
        ReceiveAsync<CompressedWriteOp>(m => Guard(m.Done, false, () => WriteCompressedAsync(m.Offset, m.Cluster)));
        ReceiveAsync<PunchDataClusters>(_ => _io.Run(PunchDurableDataClusters));
        Receive<PauseMutations>(m =>
        {
            Become(Paused);
            m.Done.TrySetResult();
        });
        ReceiveAsync<WriteBackTable>(WriteBackAsync);
        Receive<ResumeMutations>(_ => { });
        Receive<StopIfClean>(m =>
        {
            if (_dirty)
            {
                m.Parent.Tell(new StayAlive(m.L1Index));
                return;
            }
            // The parent stops us (it may be mid-checkpoint now and still send us Pause and
            // WriteBack, which must be answered); until then we only acknowledge those.
            Become(Stopping);
            m.Parent.Tell(new ReadyToStop(m.L1Index, Self));
        });
    }

    private void Stopping()
    {
        Receive<PauseMutations>(m => m.Done.TrySetResult());
        Receive<WriteBackTable>(m => m.Done.TrySetResult());
        ReceiveAny(_ => { });
    }

    private void Paused()
    {
        ReceiveAsync<WriteBackTable>(WriteBackAsync);
        Receive<ResumeMutations>(_ =>
        {
            Become(Active);
            Stash.UnstashAll();
        });
        Receive<StopIfClean>(m => m.Parent.Tell(new StayAlive(m.L1Index)));
        ReceiveAny(_ => Stash.Stash());
    }

    private async Task Guard(TaskCompletionSource done, bool freeingOnly, Func<Task> body)
    {
        try
        {
            _ctx.ThrowIfReadOnly();
            // Journal space for this request's records is reserved before anything changes: a full
            // disk fails this request here, instead of the commit that would have to persist them.
            if (_ctx.JournalSpace is { Unchecked: false } space && space.Headroom < Journal.JournalReservation.Margin)
                await _io.Run(() => space.EnsureHeadroom(freeingOnly));
            await body();
            done.TrySetResult();
        }
        catch (Exception ex)
        {
            if (ex is Qcow2ImageCorruptException) _ctx.Fail(Qcow2ImageFaultKind.Corrupt, ex.Message);
            if (ex is not Qcow2NoSpaceException && Qcow2NoSpaceException.IsNoSpace(ex))
                ex = new Qcow2NoSpaceException($"'{_ctx.Path}': no space left on the host for this request: {ex.Message}", ex);
            if (ex is Qcow2NoSpaceException) _ctx.Report(Qcow2ImageFaultKind.NoSpace, ex.Message);
            done.TrySetException(ex);
        }
    }

    private async Task WriteBackAsync(WriteBackTable m)
    {
        try
        {
            byte[]? bytes = null;
            long offset = _tableOffset;
            if (_dirty && _words is not null)
            {
                _ctx.CheckTableWrite(offset, _g.ClusterSize, MetadataKind.L2Table);
                bytes = new byte[_g.ClusterSize];
                new L2View(offset, _words, _g.ExtendedL2).WriteTo(bytes);
            }
            // On an I/O thread, the mailbox waiting. The checkpoint's flush made every earlier discard
            // durable: punch now, before close.
            if (bytes is not null || _dataPunches.Count > 0)
                await _io.Run(() =>
                {
                    PunchDurableDataClusters();
                    if (bytes is not null) _ctx.Device.Write(bytes, offset);
                });
            if (bytes is not null)
            {
                _dirty = false;
                _ctx.Layer.L2Tables.Unpin(offset);
                _pinnedOffset = -1;
            }
            m.Done.TrySetResult();
        }
        catch (Exception ex)
        {
            m.Done.TrySetException(ex);
        }
    }

    // ---------------------------------------------------------------- table state

    private L2Entry Entry(int i) => _words is null ? default
        : _g.ExtendedL2 ? new L2Entry(_words[2 * i], _words[2 * i + 1]) : new L2Entry(_words[i]);

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
        var alloc = await Allocate(1);
        try
        {
            // The table reaches its cluster only at a checkpoint: its space is taken now, so that
            // write cannot meet a full disk.
            _ctx.Device.ReserveSpace(alloc.Offset, _g.ClusterSize);
        }
        catch (Qcow2NoSpaceException)
        {
            _ctx.Refcounts.Tell(new AdjustRefcounts([alloc.Offset >> _g.ClusterBits], -1, null));
            throw;
        }
        long oldOffset = _tableOffset;
        var words = _words is null ? new ulong[_g.ExtendedL2 ? 2 * _entries : _entries] : (ulong[])_words.Clone();
        _tableOffset = alloc.Offset;
        _words = words;
        _ctx.CheckDataWrite(alloc.Offset, _g.ClusterSize);
        _ctx.Metadata.Add(alloc.Offset, _g.ClusterSize, MetadataKind.L2Table);
        records.Add(new NewTable(TableKind.L2, alloc.Offset, _g.ClusterSize));
        if (_tableShared)
        {
            // A shared table is counted once per L1 that reaches it, and so are its data
            // clusters: moving the active L1's path to a copy leaves every data refcount as it
            // is and only drops the old table's count by one. The copy's entries stay
            // not-COPIED (their clusters are still shared with the snapshot).
            for (int i = 0; i < _entries; i++)
            {
                var e = Entry(i);
                if (e.IsCopied) SetEntry(i, e.WithCopied(false), records);
                else if (e.Word0 != 0 || e.Bitmap != 0) SetEntry(i, e, records);
            }
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
        if (records.Count > 0) _ctx.Journal.Tell(new AppendRecords(records));
        Publish(newTable);
        // Releases go out after the records that drop the references (same sender, same journal: ordered).
        if (release.Count > 0) _ctx.Refcounts.Tell(new AdjustRefcounts([.. release], -1, null));
    }

    private IEnumerable<long> HostClusters(L2Entry e)
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

    private Task<Allocation> Allocate(int count)
    {
        if (_ctx.RefcountState is { } state) return Task.FromResult(RefcountActor.AllocateNow(_ctx, state, count));
        var tcs = new TaskCompletionSource<Allocation>(TaskCreationOptions.RunContinuationsAsynchronously);
        _ctx.Refcounts.Tell(new AllocateClusters(count, tcs));
        return tcs.Task;
    }

    private Task<ulong[]> Adjust(long[] clusters, int delta)
    {
        var tcs = new TaskCompletionSource<ulong[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        _ctx.Refcounts.Tell(new AdjustRefcounts(clusters, delta, tcs));
        return tcs.Task;
    }

    // ---------------------------------------------------------------- guest writes

    private bool ReadsZeroWithoutData(L2Entry e, long clusterGuest)
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

    private bool BackingHasData(long clusterGuest) => _ctx.Backing is { } b && clusterGuest < b.Size;

    private async Task WriteAsync(long offset, ReadOnlyMemory<byte> data)
    {
        await LoadAsync();
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

    private async Task<bool> WriteClustersAsync(long offset, ReadOnlyMemory<byte> data, List<MetadataRecord> records, List<long> release)
    {
        bool newTable = false;
        long cs = _g.ClusterSize;
        long end = offset + data.Length;
        long pos = offset;
        while (pos < end)
        {
            long clusterStart = pos & ~(cs - 1);
            int index = _g.L2Index(pos);
            var e = Entry(index);
            var kind = e.GetKind(_g.Version, _g.ExtendedL2, _g.ExternalDataFile);
            long chunkEnd = Math.Min(end, clusterStart + cs);

            if (_g.ExternalDataFile)
            {
                // The cluster holds data again: a punch still waiting for its discard to be durable must not run.
                _dataPunches.Remove(clusterStart);
                // Host offset = guest offset: write through, and map the cluster once.
                await _ctx.DataDevice!.WriteAsync(data.Slice((int)(pos - offset), (int)(chunkEnd - pos)), pos);
                if (_g.ExtendedL2 ? (e.AllocBits != uint.MaxValue || !e.IsCopied) : (kind != L2EntryKind.Normal || !e.IsCopied))
                {
                    newTable |= await EnsureWritableTableAsync(records, release);
                    var entry = _g.ExtendedL2
                        ? L2Entry.Extended(clusterStart, true, e.AllocBits | _g.SubclusterMask(pos, chunkEnd), e.ZeroBits & ~_g.SubclusterMask(pos, chunkEnd))
                        : L2Entry.Standard(clusterStart, true);
                    if (!_g.ExtendedL2 && kind != L2EntryKind.Normal && chunkEnd - pos < cs)
                    {
                        // The rest of the cluster must keep reading as it did (zeros or backing).
                        await FillDataFileAsync(clusterStart, pos, chunkEnd, e);
                    }
                    SetEntry(index, entry, records);
                }
                pos = chunkEnd;
                continue;
            }

            if (kind == L2EntryKind.Normal && e.IsCopied && !_tableShared)
            {
                if (!_g.ExtendedL2 || (e.AllocBits & _g.SubclusterMask(pos, chunkEnd)) == _g.SubclusterMask(pos, chunkEnd))
                {
                    // A cluster we own is overwritten in place: unless its entry points at metadata.
                    _ctx.CheckDataWrite(e.HostOffset + (pos - clusterStart), chunkEnd - pos);
                    await _ctx.Device.WriteAsync(data.Slice((int)(pos - offset), (int)(chunkEnd - pos)), e.HostOffset + (pos - clusterStart));
                    pos = chunkEnd;
                    continue;
                }
                // Extended: the cluster is ours; write only the touched subclusters and mark them allocated.
                await WriteSubclustersAsync(e.HostOffset, clusterStart, pos, chunkEnd, data.Slice((int)(pos - offset), (int)(chunkEnd - pos)));
                newTable |= await EnsureWritableTableAsync(records, release);
                uint touched = _g.SubclusterMask(pos, chunkEnd);
                SetEntry(index, L2Entry.Extended(e.HostOffset, true, e.AllocBits | touched, e.ZeroBits & ~touched), records);
                pos = chunkEnd;
                continue;
            }

            if (kind == L2EntryKind.ZeroAllocated && e.IsCopied && !_tableShared)
            {
                // A preallocated zero cluster we own: reuse it, zero-filling around the data.
                var buf = new byte[cs];
                data.Span.Slice((int)(pos - offset), (int)(chunkEnd - pos)).CopyTo(buf.AsSpan((int)(pos - clusterStart)));
                _ctx.CheckDataWrite(e.HostOffset, cs);
                await _ctx.Device.WriteAsync(buf, e.HostOffset);
                newTable |= await EnsureWritableTableAsync(records, release);
                SetEntry(index, L2Entry.Standard(e.HostOffset, true), records);
                pos = chunkEnd;
                continue;
            }

            // Needs a new cluster: gather the run of consecutive clusters that do, allocate them
            // contiguously and write them with as few device writes as possible.
            long runEnd = chunkEnd;
            while (runEnd < end && NeedsNewCluster(Entry(_g.L2Index(runEnd)), runEnd, Math.Min(end, runEnd + cs))) runEnd = Math.Min(end, runEnd + cs);
            long runStartCluster = clusterStart;
            long runEndCluster = (runEnd + cs - 1) & ~(cs - 1);
            int count = (int)((runEndCluster - runStartCluster) / cs);
            newTable |= await EnsureWritableTableAsync(records, release);
            var alloc = await Allocate(count);
            _ctx.CheckDataWrite(alloc.Offset, count * cs);
            try
            {
                await WriteNewClustersAsync(alloc, runStartCluster, count, pos, runEnd, data.Slice((int)(pos - offset), (int)(runEnd - pos)));
            }
            catch (Exception)
            {
                // Nothing maps the run yet: give it back (a full disk must not leak the clusters it refused).
                long first = alloc.Offset >> _g.ClusterBits;
                _ctx.Refcounts.Tell(new AdjustRefcounts([.. Enumerable.Range(0, count).Select(k => first + k)], -1, null));
                throw;
            }
            for (int k = 0; k < count; k++)
            {
                long guest = runStartCluster + k * cs;
                int i = _g.L2Index(guest);
                var old = Entry(i);
                long host = alloc.Offset + k * cs;
                L2Entry entry;
                if (_g.ExtendedL2)
                {
                    long s = Math.Max(pos, guest), t = Math.Min(runEnd, guest + cs);
                    var oldKind = old.GetKind(_g.Version, true);
                    if (oldKind == L2EntryKind.Unallocated)
                    {
                        uint touched = _g.SubclusterMask(s, t);
                        entry = L2Entry.Extended(host, true, touched, old.ZeroBits & ~touched);
                    }
                    else entry = L2Entry.Extended(host, true, uint.MaxValue, 0); // copied whole
                }
                else entry = L2Entry.Standard(host, true);
                release.AddRange(HostClusters(old));
                SetEntry(i, entry, records);
            }
            pos = runEnd;
        }
        return newTable;
    }

    private bool NeedsNewCluster(L2Entry e, long pos, long chunkEnd)
    {
        if (_tableShared) return true;
        var kind = e.GetKind(_g.Version, _g.ExtendedL2, _g.ExternalDataFile);
        if (kind == L2EntryKind.Normal && e.IsCopied) return false;
        if (kind == L2EntryKind.ZeroAllocated && e.IsCopied) return false;
        return true;
    }


    /// <summary>Writes newly allocated clusters for guest [dataStart, dataEnd), filling the rest from what the guest reads now.</summary>
    private async Task WriteNewClustersAsync(Allocation alloc, long runStart, int count, long dataStart, long dataEnd, ReadOnlyMemory<byte> data)
    {
        long cs = _g.ClusterSize;
        long runBytes = count * cs;
        bool headPartial = dataStart != runStart;
        bool tailPartial = dataEnd != runStart + runBytes;
        if (!headPartial && !tailPartial)
        {
            await _ctx.Device.WriteAsync(data, alloc.Offset);
            return;
        }
        // For extended L2 entries that were unallocated, only the touched subclusters are written.
        if (_g.ExtendedL2)
        {
            long sc = _g.SubclusterSize;
            long s = dataStart & ~(sc - 1), t = (dataEnd + sc - 1) & ~(sc - 1);
            bool allFromUnallocated = true;
            for (long c = runStart; c < runStart + runBytes; c += cs)
                allFromUnallocated &= Entry(_g.L2Index(c)).GetKind(_g.Version, true) == L2EntryKind.Unallocated;
            if (allFromUnallocated)
            {
                var part = new byte[t - s];
                if (s != dataStart || t != dataEnd)
                    await _ctx.Layer.ReadAsync(_ctx.Layer.Views.Current, s, part, default);
                data.Span.CopyTo(part.AsSpan((int)(dataStart - s)));
                await _ctx.Device.WriteAsync(part, alloc.Offset + (s - runStart));
                return;
            }
        }
        bool headZero = !headPartial || ReadsZeroWithoutData(Entry(_g.L2Index(runStart)), runStart);
        bool tailZero = !tailPartial || ReadsZeroWithoutData(Entry(_g.L2Index(runStart + runBytes - cs)), runStart + runBytes - cs);
        if (alloc.Fresh && headZero && tailZero)
        {
            // Fresh clusters read as zeros already: write only the data.
            await _ctx.Device.WriteAsync(data, alloc.Offset + (dataStart - runStart));
            return;
        }
        var buffer = ArrayPool<byte>.Shared.Rent((int)runBytes);
        try
        {
            var mem = buffer.AsMemory(0, (int)runBytes);
            var view = _ctx.Layer.Views.Current;
            if (headPartial)
            {
                if (headZero) mem.Span[..(int)cs].Clear();
                else await _ctx.Layer.ReadAsync(view, runStart, mem[..(int)cs], default);
            }
            if (tailPartial && (count > 1 || !headPartial))
            {
                var tail = mem[(int)(runBytes - cs)..];
                if (tailZero) tail.Span.Clear();
                else await _ctx.Layer.ReadAsync(view, runStart + runBytes - cs, tail, default);
            }
            data.Span.CopyTo(mem.Span[(int)(dataStart - runStart)..]);
            await _ctx.Device.WriteAsync(mem, alloc.Offset);
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
            await _ctx.Layer.ReadAsync(_ctx.Layer.Views.Current, s, part, default);
        data.Span.CopyTo(part.AsSpan((int)(pos - s)));
        _ctx.CheckDataWrite(host + (s - clusterStart), part.Length);
        await _ctx.Device.WriteAsync(part, host + (s - clusterStart));
    }

    private async Task FillDataFileAsync(long clusterStart, long pos, long chunkEnd, L2Entry e)
    {
        long cs = _g.ClusterSize;
        var buf = new byte[cs];
        if (!ReadsZeroWithoutData(e, clusterStart))
            await _ctx.Layer.ReadAsync(_ctx.Layer.Views.Current, clusterStart, buf, default);
        if (pos > clusterStart) await _ctx.DataDevice!.WriteAsync(buf.AsMemory(0, (int)(pos - clusterStart)), clusterStart);
        long tail = clusterStart + cs - chunkEnd;
        if (tail > 0) await _ctx.DataDevice!.WriteAsync(buf.AsMemory((int)(chunkEnd - clusterStart), (int)tail), chunkEnd);
    }

    // ---------------------------------------------------------------- zeroes, discard, compressed

    private async Task ZeroAsync(long offset, long length, bool unmap)
    {
        await LoadAsync();
        long cs = _g.ClusterSize;
        long end = offset + length;
        long pos = offset;
        while (pos < end)
        {
            long clusterStart = pos & ~(cs - 1);
            long chunkEnd = Math.Min(end, clusterStart + cs);
            bool whole = pos == clusterStart && chunkEnd == clusterStart + cs;
            long unit = _g.ExtendedL2 ? _g.SubclusterSize : cs;
            bool byMetadata = !_g.ExternalDataFile && (whole || (_g.ExtendedL2 && ((pos | chunkEnd) & (unit - 1)) == 0));
            if (!byMetadata || !await ZeroByMetadataAsync(clusterStart, pos, chunkEnd, unmap))
                await WriteZeroDataAsync(pos, chunkEnd);
            pos = chunkEnd;
        }
    }

    private async Task WriteZeroDataAsync(long from, long to)
    {
        var zeros = new byte[to - from];
        await WriteAsync(from, zeros);
    }

    /// <summary>Zeroes a whole cluster (or whole subclusters) in metadata; false when the format cannot express it.</summary>
    private async Task<bool> ZeroByMetadataAsync(long clusterStart, long from, long to, bool unmap)
    {
        int index = _g.L2Index(clusterStart);
        var e = Entry(index);
        var kind = e.GetKind(_g.Version, _g.ExtendedL2);
        var records = new List<MetadataRecord>();
        var release = new List<long>();
        L2Entry next;
        if (_g.ExtendedL2)
        {
            uint touched = _g.SubclusterMask(from, to);
            if (kind == L2EntryKind.Compressed)
            {
                if (touched != uint.MaxValue) return false;
                next = L2Entry.Extended(0, false, 0, uint.MaxValue);
                release.AddRange(HostClusters(e));
            }
            else
            {
                uint alloc = e.AllocBits & ~touched;
                uint zero = e.ZeroBits | touched;
                long host = e.HostOffset;
                bool owned = e.IsCopied && !_tableShared;
                if (host != 0 && ((unmap && alloc == 0) || !owned))
                {
                    if (!owned && alloc != 0) return false; // shared cluster with data left: needs COW
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
                if (BackingHasData(clusterStart)) return false;
                if (!unmap && kind == L2EntryKind.Normal && e.IsCopied) return false;
                if (kind == L2EntryKind.Unallocated) return true;
                next = default;
            }
            else if (!unmap && (kind is L2EntryKind.Normal or L2EntryKind.ZeroAllocated) && e.IsCopied && !_tableShared)
            {
                next = L2Entry.Zero(e.HostOffset, copied: true); // keep the space, as asked
            }
            else
            {
                if (zeroAlready && kind == L2EntryKind.ZeroPlain) return true;
                next = L2Entry.Zero();
            }
            if (next.HostOffset == 0) release.AddRange(HostClusters(e));
        }
        if (next == e) return true;
        bool newTable = await EnsureWritableTableAsync(records, release);
        SetEntry(index, next, records);
        Commit(newTable, records, release);
        return true;
    }

    private async Task DiscardAsync(long offset, long length)
    {
        await LoadAsync();
        if (_words is null && !BackingHasData((long)_l1Index << _g.L2CoverageBits)) return;
        if (_g.ExternalDataFile)
        {
            await DiscardDataFileAsync(offset, length);
            return;
        }
        long cs = _g.ClusterSize;
        var records = new List<MetadataRecord>();
        var release = new List<long>();
        bool newTable = false;
        // Discard is advisory: only whole clusters are dropped.
        for (long c = (offset + cs - 1) & ~(cs - 1); c + cs <= offset + length; c += cs)
        {
            int index = _g.L2Index(c);
            var e = Entry(index);
            // As QEMU: a discarded cluster reads as zeros in v3 even where it was unallocated
            // over a backing file (v2 cannot say so, and shows the backing file again).
            L2Entry next = BackingHasData(c)
                ? (_g.ExtendedL2 ? L2Entry.Extended(0, false, 0, uint.MaxValue) : _g.Version >= 3 ? L2Entry.Zero() : default)
                : default;
            if (next == e) continue;
            newTable |= await EnsureWritableTableAsync(records, release);
            release.AddRange(HostClusters(e));
            SetEntry(index, next, records);
        }
        Commit(newTable, records, release);
    }

    /// <summary>
    /// Discard with an external data file, as QEMU does it: the cluster reads as zeros from now on
    /// (a zero entry, whatever lies below), and its data-file range is punched once that is durable.
    /// </summary>
    private async Task DiscardDataFileAsync(long offset, long length)
    {
        long cs = _g.ClusterSize;
        var records = new List<MetadataRecord>();
        var release = new List<long>();
        var punch = new List<long>();
        bool newTable = false;
        L2Entry zero = _g.ExtendedL2 ? L2Entry.Extended(0, false, 0, uint.MaxValue) : L2Entry.Zero();
        for (long c = (offset + cs - 1) & ~(cs - 1); c + cs <= offset + length; c += cs)
        {
            int index = _g.L2Index(c);
            var e = Entry(index);
            var kind = e.GetKind(_g.Version, _g.ExtendedL2, true);
            if (e == zero || (kind == L2EntryKind.Unallocated && (!_g.ExtendedL2 || e.Bitmap == 0) && !BackingHasData(c))) continue;
            newTable |= await EnsureWritableTableAsync(records, release);
            SetEntry(index, zero, records);
            punch.Add(c);
        }
        if (records.Count == 0) return;
        if (newTable && _words is not null) records.Add(new SetL1Entry(_l1Index, L1Entry.Create(_tableOffset, copied: true).Raw));
        var durable = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _ctx.Journal.Tell(new AppendRecords(records, Durable: durable));
        Publish(newTable);
        if (release.Count > 0) _ctx.Refcounts.Tell(new AdjustRefcounts([.. release], -1, null));
        foreach (var c in punch) _dataPunches[c] = durable.Task;
        var self = Self;
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
            bool newTable = await EnsureWritableTableAsync(records, release);
            var tcs = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
            _ctx.Refcounts.Tell(new AllocateCompressedBytes(written, tcs));
            long at = await tcs.Task;
            _ctx.CheckDataWrite(at, written);
            await _ctx.Device.WriteAsync(output.AsMemory(0, written), at);
            // The read side remembers the last decompressed cluster by host offset, which this may reuse.
            _ctx.Layer.ForgetDecompressed();
            int index = _g.L2Index(offset);
            release.AddRange(HostClusters(Entry(index)));
            SetEntry(index, L2Entry.Compressed(at, written, _g.ClusterBits), records);
            Commit(newTable, records, release);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(output);
        }
    }
}
