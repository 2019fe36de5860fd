using Akka.Actor;
using Akka.Event;
using Qcow2Actors.Engine.Metadata;

namespace Qcow2Actors.Engine.Write;

/// <summary>
/// Owns the refcounts of one image: allocates runs of clusters, packs compressed data,
/// raises and lowers counts, and grows its own table. Every change goes to the journal
/// as absolute records; a cluster whose count drops to 0 stays quarantined until the
/// journal says the record that freed it is durable, so a crash can never resurrect an
/// old mapping onto data that was written into a reused cluster.
/// </summary>
internal sealed class RefcountActor : ReceiveActor
{
    private readonly ImageContext _ctx;
    private readonly RefcountState _state;
    private readonly BlockingIo _io = BlockingIo.For(Context.System);
    // Compressed clusters are packed at byte granularity into the tail of the last cluster
    // allocated for compressed data, as QEMU does; each use adds one reference.
    private long _compressedCursor;

    public RefcountActor(ImageContext ctx, RefcountState state)
    {
        _ctx = ctx;
        _state = state;
        // The state is also used directly (under its lock) by table actors that allocate: see AllocateNow.
        Receive<AllocateClusters>(m => { lock (_state) Run(m.Reply, records => new Allocation(_state.Allocate(m.Count, records, out var fresh), fresh)); });
        Receive<AllocateCompressedBytes>(m => { lock (_state) Run(m.Reply, records => AllocateBytes(m.Length, records)); });
        Receive<AdjustRefcounts>(m => { lock (_state) Adjust(m); });
        Receive<GetRefcounts>(m => { lock (_state) m.Reply.TrySetResult([.. m.Clusters.Select(_state.Get)]); });
        ReceiveAsync<ReleaseQuarantine>(async m =>
        {
            // The records that freed these clusters are durable: give their space back to the host
            // BEFORE they become allocatable (a punch after reuse would destroy new data). On an I/O
            // thread, as the journal does its file I/O; the mailbox waits meanwhile.
            try
            {
                await _io.Run(() => PunchFreed(_ctx, m.Clusters));
            }
            catch (Exception ex) when (ex is IOException or ObjectDisposedException)
            {
                // Not giving space back wastes it but loses nothing; the clusters stay free.
                Context.GetLogger().Warning("'{0}': could not give freed clusters back to the host: {1}", _ctx.Path, ex.Message);
            }
            lock (_state) _state.Release(m.Clusters);
        });
        ReceiveAsync<WriteBackRefcounts>(async m =>
        {
            try
            {
                // Written on an I/O thread (blocking writes); the table actors are paused meanwhile.
                var table = await _io.Run(() =>
                {
                    lock (_state)
                    {
                        // Nothing is written in place once the image turned read-only (a corrupt image above all).
                        _ctx.ThrowIfReadOnly();
                        try
                        {
                            _state.WriteBack();
                        }
                        catch (Qcow2ImageCorruptException ex)
                        {
                            throw _ctx.MarkCorrupt(ex.Message);
                        }
                        return (_state.TableOffset, _state.TableClusters);
                    }
                });
                m.Reply.TrySetResult(table);
            }
            catch (Exception ex)
            {
                m.Reply.TrySetException(ex);
            }
        });
    }

    private void Run<T>(TaskCompletionSource<T> reply, Func<List<MetadataRecord>, T> body)
    {
        var records = new List<MetadataRecord>();
        try
        {
            var result = body(records);
            Publish(records, null);
            reply.TrySetResult(result);
        }
        catch (Exception ex)
        {
            Publish(records, null);
            reply.TrySetException(ex);
        }
    }

    private void Adjust(AdjustRefcounts m)
    {
        var records = new List<MetadataRecord>();
        var freed = new List<long>();
        var result = new ulong[m.Clusters.Length];
        try
        {
            for (int i = 0; i < m.Clusters.Length; i++)
            {
                result[i] = _state.Adjust(m.Clusters[i], m.Delta, records);
                if (result[i] == 0) freed.Add(m.Clusters[i]);
                if (result[i] == 0 && m.Clusters[i] == (_compressedCursor >> (int)Math.Log2(_state.ClusterSize)))
                    _compressedCursor = 0; // never pack into a cluster that was freed
            }
            Publish(records, freed.Count == 0 ? null : [.. freed]);
            m.Reply?.TrySetResult(result);
        }
        catch (Exception ex)
        {
            Publish(records, freed.Count == 0 ? null : [.. freed]);
            _ctx.Fail(ex is Qcow2ImageCorruptException ? Qcow2ImageFaultKind.Corrupt : Qcow2ImageFaultKind.ReadOnly, ex.Message);
            m.Reply?.TrySetException(ex);
        }
    }

    private long AllocateBytes(int length, List<MetadataRecord> records)
    {
        long cs = _state.ClusterSize;
        if (_compressedCursor != 0 && (_compressedCursor & (cs - 1)) != 0)
        {
            long free = cs - (_compressedCursor & (cs - 1));
            // Each compressed cluster packed into a host cluster adds a reference: stop at the width's maximum.
            if (length <= free && _state.Get(_compressedCursor / cs) < _state.MaxRefcount)
            {
                long at = _compressedCursor;
                _state.Adjust(at / cs, +1, records);
                _compressedCursor = at + length;
                return at;
            }
        }
        int clusters = (int)((length + cs - 1) / cs);
        long start = _state.Allocate(clusters, records, out _);
        _compressedCursor = start + length;
        return start;
    }

    /// <summary>
    /// Allocates <paramref name="count"/> contiguous clusters on the caller's thread: the hot path of an
    /// allocating write takes the state's lock for a few microseconds instead of a round trip through
    /// this actor's mailbox (two thread switches). The records go to the journal inside the lock, so the
    /// journal sees every refcount change in the order the state applied them, whoever made it.
    /// </summary>
    public static Allocation AllocateNow(ImageContext ctx, RefcountState state, int count)
    {
        var records = new List<MetadataRecord>();
        lock (state)
        {
            try
            {
                return new Allocation(state.Allocate(count, records, out var fresh), fresh);
            }
            finally
            {
                if (records.Count > 0) ctx.Journal.Tell(new AppendRecords(records));
            }
        }
    }

    /// <summary>Punches every run of contiguous freed clusters out of the image file (one fallocate per run).</summary>
    internal static void PunchFreed(ImageContext ctx, long[] clusters)
    {
        if (clusters.Length == 0 || ctx.ReadOnlyReason is not null) return;
        var sorted = clusters.Order().ToArray();
        int bits = ctx.Geometry.ClusterBits;
        long runStart = sorted[0], runEnd = sorted[0] + 1;
        foreach (var c in sorted.Skip(1))
        {
            if (c == runEnd) { runEnd++; continue; }
            if (c < runEnd) continue;
            ctx.Device.PunchHole(runStart << bits, (runEnd - runStart) << bits);
            runStart = c;
            runEnd = c + 1;
        }
        ctx.Device.PunchHole(runStart << bits, (runEnd - runStart) << bits);
    }

    private void Publish(List<MetadataRecord> records, long[]? freed)
    {
        if (records.Count > 0 || freed is not null) _ctx.Journal.Tell(new AppendRecords(records, freed));
    }

    /// <summary>Props for the refcount actor of an image.</summary>
    public static Props Props(ImageContext ctx, RefcountState state) =>
        Akka.Actor.Props.Create(() => new RefcountActor(ctx, state));
}
