using Akka.Actor;
using Qcow2Actors.Engine.Read;
using Qcow2Actors.Engine.Write;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine;

// The write side of Qcow2Image: the data path goes straight to the device when a cluster
// is already ours (refcount 1, not compressed, not zero), after a lock-free lookup in the
// published views; everything that changes metadata crosses to the image's actors with
// Tell + TaskCompletionSource.
// Over 450 lines because the three ways a write enters (WriteAsync, TryStartWrite, WriteInlineAsync) share one core,
// and zero, discard and compressed writes share its admission, quota and routing: split apart, the rule of where each
// piece of a write runs would be spread over several files.
public sealed partial class Qcow2Image
{
    private readonly ImageContext? _ctx;
    private readonly IActorRef? _imageActor;
    private readonly ImageHost? _host;
    // Completed when the host stopped under the open image (Abandon): its actors are gone, so a
    // close must not wait for them.
    private readonly TaskCompletionSource _abandoned = new(TaskCreationOptions.RunContinuationsAsynchronously);

    internal Qcow2Image(OpenedImage opened, ImageHost host) : this(opened.Layer)
    {
        _ctx = opened.Context;
        _imageActor = opened.Image;
        _host = host;
    }

    /// <summary>True when the image was opened without write access, or has turned read-only after a failure.</summary>
    public bool IsReadOnly => _ctx is null || _ctx.ReadOnlyReason is not null;

    /// <summary>The write side's shared state (null when read-only), for benchmarks and tests.</summary>
    internal ImageContext? WriteContext => _ctx;

    /// <summary>Why a read-write image turned read-only (a failed fsync, corruption found), or null.</summary>
    public string? ReadOnlyReason => _ctx?.ReadOnlyReason;

    /// <summary>
    /// Writes <paramref name="data"/> at <paramref name="offset"/>. Volatile until a flush, as on
    /// a disk; with <paramref name="fua"/> the write and everything before it are durable on return.
    /// </summary>
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua = false, CancellationToken cancellationToken = default) =>
        WriteCoreAsync(null, offset, data, fua, WriteMode.Pool, cancellationToken);

    /// <summary>
    /// Starts a write that goes whole to the image's actors, so the calling thread never waits on the device: for a
    /// caller on a thread that must not block, such as an event loop. Returns false, having started nothing, when the
    /// write belongs on <see cref="WriteAsync"/> from a thread that may block: its first cluster is the image's own and
    /// is overwritten in place there, or the image is read-only or closed, has a space quota (whose reservation may
    /// read tables), or an external data file.
    /// </summary>
    /// <param name="offset">Guest offset of the first byte.</param>
    /// <param name="data">The bytes; the caller keeps them unchanged until <paramref name="write"/> completes.</param>
    /// <param name="cancellationToken">Stops waiting for admission (a snapshot edit in progress), as for <see cref="WriteAsync"/>.</param>
    /// <param name="write">
    /// The write, volatile until a flush as with <see cref="WriteAsync"/>. It completes on an engine thread, at the
    /// moment the write ends and before that thread goes on: its continuation runs there, so it must be short and
    /// must not block.
    /// </param>
    public bool TryStartWrite(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken, out ValueTask write)
    {
        write = default;
        if (_ctx is not { } ctx || ctx.ReadOnlyReason is not null || _disposed != 0 || data.Length == 0
            || ctx.Geometry.ExternalDataFile || ctx.Allocator?.Space is not null || !InDisk(offset, data.Length))
            return false;
        var g = ctx.Geometry;
        long firstEnd = Math.Min(offset + data.Length, ((offset >> g.ClusterBits) + 1) << g.ClusterBits);
        if (OwnedRuns(ctx, offset, firstEnd, null) > offset) return false;
        write = WriteCoreAsync(ctx, offset, data, fua: false, WriteMode.HandOff, cancellationToken);
        return true;
    }

    /// <summary>
    /// <see cref="WriteAsync"/> for a caller whose thread may wait on the device and that wants the write done on it:
    /// clusters the image owns are overwritten in place here, and when the table actor a write needs has nothing else
    /// queued, it runs that write here too instead of on a pool thread. The returned task then is complete on return;
    /// when it is not (the actor was busy, or the write waits for admission), it completes on an engine thread, at the
    /// moment the write ends: its continuation runs there, so it must be short and must not block.
    /// </summary>
    /// <param name="offset">Guest offset of the first byte.</param>
    /// <param name="data">The bytes; the caller keeps them unchanged until the write completes.</param>
    /// <param name="cancellationToken">Stops waiting for admission, as for <see cref="WriteAsync"/>.</param>
    /// <remarks>For a thread of the caller's own (an NBD connection's) or a pool thread; not for an event loop or an actor.</remarks>
    public ValueTask WriteInlineAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        bool opened = InlineDispatch.Open();
        try
        {
            return WriteCoreAsync(null, offset, data, fua: false, WriteMode.Inline, cancellationToken);
        }
        finally
        {
            // The table actor the write was sent to runs here, after the route it went through was left.
            if (opened) InlineDispatch.Close();
        }
    }

    /// <summary>Where a write's pieces run, and where the caller's continuation runs.</summary>
    private enum WriteMode
    {
        /// <summary>Owned clusters in place on the caller's thread; the continuation on the pool (WriteAsync).</summary>
        Pool,

        /// <summary>Nothing on the caller's thread; the continuation where the table operation ends (TryStartWrite).</summary>
        HandOff,

        /// <summary>Owned clusters in place, table operations too when their actor is idle; the continuation where they end (WriteInlineAsync).</summary>
        Inline,
    }

    /// <summary>
    /// <see cref="WriteAsync"/> (<paramref name="writer"/> null), <see cref="TryStartWrite"/> and <see cref="WriteInlineAsync"/>;
    /// <paramref name="mode"/> says which (<see cref="WriteMode"/>).
    /// </summary>
    private async ValueTask WriteCoreAsync(ImageContext? writer, long offset, ReadOnlyMemory<byte> data, bool fua, WriteMode mode, CancellationToken cancellationToken)
    {
        // Inside the task: a closed or read-only image fails the returned task, not the call.
        var ctx = writer ?? Writer();
        using var admitted = await EnterAsync(cancellationToken).ConfigureAwait(false);
        CheckRange(offset, data.Length);
        // Bits first, durably: a bitmap must cover every write that may reach the disk, acknowledged or not.
        await MarkBitmapsAsync(ctx, offset, data.Length, cancellationToken).ConfigureAwait(false);
        if (data.Length > 0)
        {
            var g = ctx.Geometry;
            long end = offset + data.Length;
            List<Task>? pending = null;
            long pos = offset;
            // With a quota, the clusters of every table the write touches are reserved before any is mapped.
            var space = await ReserveSpaceAsync(ctx, offset, data.Length,
                static (planner, table, from, to) => planner.NewClustersForWrite(table, from, to), cancellationToken).ConfigureAwait(false);
            try
            {
                while (pos < end)
                {
                    long tableEnd = Math.Min(end, ((pos >> g.L2CoverageBits) + 1) << g.L2CoverageBits);
                    // Fast path: clusters we own are overwritten in place with no actor hop.
                    long fastEnd;
                    try
                    {
                        fastEnd = mode == WriteMode.HandOff ? pos : await WriteOwnedAsync(ctx, pos, data.Slice((int)(pos - offset), (int)(tableEnd - pos)), cancellationToken).ConfigureAwait(false);
                    }
                    catch (IOException ex) when (ex is not Qcow2NoSpaceException && Qcow2NoSpaceException.IsNoSpace(ex))
                    {
                        // An owned cluster whose space was given back (a hole) needs new space to be written.
                        var noSpace = new Qcow2NoSpaceException($"'{ctx.Path}': no space left on the host for the write at {pos}: {ex.Message}", ex);
                        ctx.Report(Qcow2ImageFaultKind.NoSpace, noSpace.Message);
                        throw noSpace;
                    }
                    if (fastEnd < tableEnd)
                    {
                        // Handed off or inline, the caller's continuation (short, by contract) runs where the table
                        // operation ends: one thread hand-off fewer per write.
                        var done = new TaskCompletionSource(mode == WriteMode.Pool ? TaskCreationOptions.RunContinuationsAsynchronously : TaskCreationOptions.None);
                        RouteToTable(ctx, (int)g.L1Index(fastEnd), new WriteOp(fastEnd, data.Slice((int)(fastEnd - offset), (int)(tableEnd - fastEnd)), done, space));
                        // Inline, an idle table actor runs here and now, before this write goes on to its next table.
                        if (mode == WriteMode.Inline) InlineDispatch.RunDeferred();
                        (pending ??= new List<Task>()).Add(done.Task);
                    }
                    pos = tableEnd;
                }
                if (pending is not null) await (pending.Count == 1 ? pending[0] : Task.WhenAll(pending)).ConfigureAwait(false);
            }
            finally
            {
                // Also on failure (a later table's in-place write failed or was cancelled): the table
                // operations already routed still read the caller's buffer, which the caller may reuse
                // (a pooled NBD request buffer) the moment this returns. So do the space reservation.
                if (pending is not null) await Task.WhenAll(pending).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
                space?.Dispose();
            }
        }
        if (fua) await FlushAdmittedAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Sets the bits of [offset, offset + length) in every tracked bitmap and, when a granule of it is not
    /// durable yet, waits for the journal to hold it (<see cref="JournalBitmapsAsync"/>); completes at once otherwise.
    /// </summary>
    private static ValueTask MarkBitmapsAsync(ImageContext ctx, long offset, long length, CancellationToken cancellationToken) =>
        ctx.Bitmaps?.Mark(offset, length) == true ? JournalBitmapsAsync(ctx, offset, length, cancellationToken) : ValueTask.CompletedTask;

    /// <summary>
    /// Waits until the journal durably holds the granules of [offset, offset + length) that a tracked
    /// bitmap lacks (one journal write for every write waiting at the time), so the data issued after
    /// this can reach the disk only with its bits recoverable. Writes to granules already durable never get here.
    /// </summary>
    private static async ValueTask JournalBitmapsAsync(ImageContext ctx, long offset, long length, CancellationToken cancellationToken)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        ctx.BitmapJournal.Tell(new BitmapTouch(offset, length, done));
        await done.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Writes the owned prefix of [pos, pos + data.Length) directly to the device; returns
    /// where the first cluster that needs a metadata change starts (or the end). Each host
    /// range written is leased until its device write completes, so a discard racing with it
    /// cannot have the cluster punched or reused under it (<see cref="ClusterLeases"/>).
    /// </summary>
    private async ValueTask<long> WriteOwnedAsync(ImageContext ctx, long pos, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        if (ctx.Geometry.ExternalDataFile) return pos;
        long end = OwnedRuns(ctx, pos, pos + data.Length, null);
        if (end == pos) return pos;
        var runs = new List<OwnedRun>(1);
        OwnedRuns(ctx, pos, end, runs);
        var leases = new ClusterLeases.Lease[runs.Count];
        int bits = ctx.Geometry.ClusterBits;
        try
        {
            for (int i = 0; i < runs.Count; i++) leases[i] = ctx.Leases.Acquire(runs[i].Host, runs[i].End - runs[i].Start, bits);
            // Leased first, then checked against what is published now: a discard published before
            // the lease is seen here (the write goes to the table actor), one published after it
            // frees the cluster only after a flush, and that waits for the lease.
            var again = new List<OwnedRun>(runs.Count);
            if (OwnedRuns(ctx, pos, end, again) != end || !again.SequenceEqual(runs)) return pos;
            foreach (var run in runs)
            {
                // An L2 entry that points at metadata must not make a guest write destroy it.
                ctx.CheckDataWrite(run.Host, run.End - run.Start);
                await ctx.Device.WriteAsync(data.Slice((int)(run.Start - pos), (int)(run.End - run.Start)), run.Host, cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            foreach (var lease in leases) lease?.Dispose();
        }
        return end;
    }

    /// <summary>A guest range [Start, End) stored contiguously from host offset Host in clusters we own.</summary>
    private readonly record struct OwnedRun(long Host, long Start, long End);

    /// <summary>
    /// Finds, in the published views, how far from <paramref name="pos"/> the clusters are ours
    /// (refcount 1, not compressed, not zero) and returns that end; with <paramref name="runs"/>,
    /// also lists the host-contiguous runs of that prefix.
    /// </summary>
    private static long OwnedRuns(ImageContext ctx, long pos, long end, List<OwnedRun>? runs)
    {
        var g = ctx.Geometry;
        var view = ctx.Layer.Views.Current;
        var l1 = new L1Entry(view.L1Entry(g.L1Index(pos)));
        if (l1.L2Offset == 0 || !l1.IsCopied) return pos;
        if (!ctx.Layer.L2Tables.TryGet(l1.L2Offset, out var l2)) return pos;
        long cs = g.ClusterSize;
        long runHost = -1, runStart = pos, cur = pos;
        while (cur < end)
        {
            long clusterStart = cur & ~(cs - 1);
            long chunkEnd = Math.Min(end, clusterStart + cs);
            int index = g.L2Index(cur);
            var e = new L2Entry(l2.Entry(index), l2.Bitmap(index));
            if (!e.CanWriteInPlace(g.ExtendedL2, g.SubclusterMask(cur, chunkEnd))) break;
            long host = e.HostOffset + (cur - clusterStart);
            if (runHost >= 0 && host != runHost + (cur - runStart))
            {
                runs?.Add(new OwnedRun(runHost, runStart, cur));
                runHost = -1;
            }
            if (runHost < 0) { runHost = host; runStart = cur; }
            cur = chunkEnd;
        }
        if (runHost >= 0) runs?.Add(new OwnedRun(runHost, runStart, cur));
        return cur;
    }

    /// <summary>
    /// Makes [offset, offset + length) read as zeros. Whole clusters (or subclusters) are zeroed
    /// in metadata; with <paramref name="unmap"/> their space may be freed, without it it stays allocated.
    /// </summary>
    public async ValueTask WriteZeroesAsync(long offset, long length, bool unmap = false, bool fua = false, CancellationToken cancellationToken = default)
    {
        var ctx = Writer();
        // Admitted before the reservation, so a snapshot edit cannot change the tables it was planned on.
        var admitted = await EnterAsync(cancellationToken).ConfigureAwait(false);
        SpaceReservation? space;
        try
        {
            CheckRange(offset, length);
            space = await ReserveSpaceAsync(ctx, offset, length,
                (planner, table, from, to) => planner.NewClustersForZero(table, from, to - from, unmap), cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            admitted.Dispose();
            throw;
        }
        await PerTableAsync(admitted, offset, length, (o, l, done) => new ZeroOp(o, l, unmap, done, space), fua, space, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Discards whole clusters in the range: their space is freed; reads then follow the spec (backing file, or zeros).
    /// A discard is never refused by a quota (it frees space; a table it must copy is charged whatever the limit).
    /// </summary>
    public async ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        Writer();
        var admitted = await EnterAsync(cancellationToken).ConfigureAwait(false);
        await PerTableAsync(admitted, offset, length, (o, l, done) => new DiscardOp(o, l, done), false, null, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Writes one whole, aligned guest cluster compressed (as <c>qemu-img convert -c</c>); stored normally if it does not shrink.</summary>
    public async ValueTask WriteCompressedAsync(long offset, ReadOnlyMemory<byte> cluster, CancellationToken cancellationToken = default)
    {
        var ctx = Writer();
        using var admitted = await EnterAsync(cancellationToken).ConfigureAwait(false);
        CheckRange(offset, cluster.Length);
        await MarkBitmapsAsync(ctx, offset, cluster.Length, cancellationToken).ConfigureAwait(false);
        if (cluster.Length < ctx.ClusterSize && offset + cluster.Length == VirtualSize)
        {
            // The last cluster of a disk whose size is not cluster aligned: compressed padded with zeros, as qemu-img does.
            var padded = new byte[ctx.ClusterSize];
            cluster.CopyTo(padded);
            cluster = padded;
        }
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        RouteToTable(ctx, (int)ctx.Geometry.L1Index(offset), new CompressedWriteOp(offset, cluster, done));
        try
        {
            await done.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!done.Task.IsCompleted)
        {
            // The table actor still reads the caller's cluster: the caller, which may reuse that buffer
            // (a pooled one, as convert's), gets it back only once the operation has ended.
            await done.Task.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            throw;
        }
    }

    /// <summary>Cluster size in bytes (the unit of <see cref="WriteCompressedAsync"/>).</summary>
    public int ClusterSize => Info.ClusterSize ?? 512;

    /// <summary>Makes every completed write durable: data (fdatasync), then the journal batch, then returns.</summary>
    public async ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        using var admitted = await EnterAsync(cancellationToken).ConfigureAwait(false);
        await FlushAdmittedAsync(cancellationToken).ConfigureAwait(false);
    }

    // The flush of a request already through the gate (a FUA write), and of FlushAsync.
    private async ValueTask FlushAdmittedAsync(CancellationToken cancellationToken)
    {
        var ctx = _ctx;
        if (ctx is null) return; // read-only: nothing to make durable
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        // After a failed fsync or journal write the journal actor may be gone: fail at once.
        ctx.ThrowIfReadOnly();
        var started = Metrics.ImageMetrics.FlushStarted();
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        ctx.Journal.Tell(new FlushRequest(done));
        await done.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        ctx.Metrics.FlushDone(started);
    }

    /// <summary>
    /// Grows the virtual disk to <paramref name="newSize"/> bytes (a multiple of 512), growing
    /// the L1 table when the new size needs more entries; the new space reads as zeros (or
    /// from the backing file). Durable on return (the image is checkpointed).
    /// </summary>
    public async ValueTask ResizeAsync(long newSize, CancellationToken cancellationToken = default)
    {
        Writer();
        var admitted = await EnterAsync(cancellationToken).ConfigureAwait(false);
        await AwaitActorAsync(Send(admitted, done => new ResizeRequest(newSize, done)), admitted, RefreshInfo, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Runs a checkpoint now: tables written in place, journal truncated, header clean.</summary>
    public async ValueTask CheckpointAsync(CancellationToken cancellationToken = default)
    {
        Writer();
        var admitted = await EnterAsync(cancellationToken).ConfigureAwait(false);
        await AwaitActorAsync(Send(admitted, done => new CheckpointRequest(done)), admitted, after: null, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Tells the image actor the request <paramref name="make"/> builds around a new completion and returns its task;
    /// if that fails, <paramref name="hold"/> (taken for the request) is let go before the exception leaves.
    /// </summary>
    private Task Send(IDisposable hold, Func<TaskCompletionSource, object> make)
    {
        try
        {
            var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _imageActor!.Tell(make(done));
            return done.Task;
        }
        catch
        {
            hold.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Routes one operation per L2 table under <paramref name="admitted"/> (snapshot edits wait for it), which this
    /// owns from here on: it is let go when the operations have ended (a FUA flush after them), also when the
    /// caller stops waiting first.
    /// </summary>
    private async ValueTask PerTableAsync(IDisposable admitted, long offset, long length, Func<long, long, TaskCompletionSource, object> make, bool fua, SpaceReservation? space, CancellationToken cancellationToken)
    {
        Task all;
        try
        {
            var ctx = Writer();
            CheckRange(offset, length);
            // Write-zeroes and discard change what the guest reads: their granules are dirty too.
            await MarkBitmapsAsync(ctx, offset, length, cancellationToken).ConfigureAwait(false);
            var g = ctx.Geometry;
            var tasks = new List<Task>();
            for (long pos = offset, end = offset + length; pos < end;)
            {
                long tableEnd = Math.Min(end, ((pos >> g.L2CoverageBits) + 1) << g.L2CoverageBits);
                var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                RouteToTable(ctx, (int)g.L1Index(pos), make(pos, tableEnd - pos, done));
                tasks.Add(done.Task);
                pos = tableEnd;
            }
            all = Task.WhenAll(tasks);
        }
        catch
        {
            space?.Dispose();
            admitted.Dispose();
            throw;
        }
        // The reservation goes back once every table operation drawing from it has ended (a cancelled
        // caller stops waiting; the operations go on).
        if (space is not null) _ = all.ContinueWith(_ => space.Dispose(), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        await AwaitActorAsync(all, admitted, after: null, cancellationToken, fua ? FlushAdmittedAsync : null).ConfigureAwait(false);
    }

    /// <summary>
    /// With a quota: reserves, before any table operation is routed, the new clusters the request
    /// takes in every L2 table it touches (as planned on the tables published now, plus the refcount
    /// metadata they could need), so a request that would pass the limit fails whole and maps nothing.
    /// Null without a quota or when the request takes no new cluster.
    /// </summary>
    private static async ValueTask<SpaceReservation?> ReserveSpaceAsync(ImageContext ctx, long offset, long length,
        Func<WritePlanner, TableEntries, long, long, long> estimate, CancellationToken cancellationToken)
    {
        if (ctx.Allocator?.Space is not { } account || length == 0) return null;
        var g = ctx.Geometry;
        var view = ctx.Layer.Views.Current;
        long clusters = 0;
        for (long pos = offset, end = offset + length; pos < end;)
        {
            long tableEnd = Math.Min(end, ((pos >> g.L2CoverageBits) + 1) << g.L2CoverageBits);
            // Clusters we own take nothing: an overwrite plans nothing at all.
            long from = g.ExternalDataFile ? pos : OwnedRuns(ctx, pos, tableEnd, null);
            if (from < tableEnd)
            {
                var l1 = new L1Entry(view.L1Entry(g.L1Index(from)));
                var l2 = l1.L2Offset == 0 ? null : await ctx.Layer.GetL2Async(view, from, cancellationToken).ConfigureAwait(false);
                clusters += estimate(ctx.Planner, new TableEntries(l2?.SharedWords, g.ExtendedL2, l2 is not null && !l1.IsCopied), from, tableEnd);
            }
            pos = tableEnd;
        }
        if (clusters == 0) return null;
        clusters += ctx.Allocator.MetadataMarginFor(clusters);
        var space = new SpaceReservation(account.Quota);
        if (space.TryEnsure(clusters * g.ClusterSize, unlimited: false)) return space;
        space.Dispose();
        var refusal = account.Quota.Refusal(ctx.Path, clusters * g.ClusterSize);
        ctx.Report(Qcow2ImageFaultKind.NoSpace, refusal.Message);
        throw refusal;
    }

    /// <summary>Sends a table operation straight to its live table actor when the image actor left a route open, else through the image actor.</summary>
    private void RouteToTable(ImageContext ctx, int index, object operation)
    {
        // Once closing, through the image actor: it fails what comes after its close instead of a stopping table dropping it.
        if (Volatile.Read(ref _disposed) == 0 && ctx.Routes.TryTell(index, operation)) ctx.Layer.L2Tables.Account?.Touch();
        else _imageActor!.Tell(new RouteToTable(index, operation));
    }

    private ImageContext Writer()
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (_ctx is null) throw new InvalidOperationException($"'{Info.FileName}' is open read-only");
        _ctx.ThrowIfReadOnly();
        return _ctx;
    }

    private async ValueTask CloseWriterAsync()
    {
        if (_imageActor is null || _ctx is null || _abandoned.Task.IsCompleted) return;
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _imageActor.Tell(new CloseRequest(done));
        try
        {
            // A host stopped meanwhile never answers; Abandon has reported that unclean close.
            if (await Task.WhenAny(done.Task, _abandoned.Task).ConfigureAwait(false) != done.Task) return;
            await done.Task.ConfigureAwait(false);
            if (_ctx.ReadOnlyReason is { } reason)
                _ctx.Report(Qcow2ImageFaultKind.UncleanClose, $"its journal is kept for the next write open or 'q2a recover' to replay (read-only since: {reason})");
        }
        catch (Exception ex)
        {
            _ctx.Report(Qcow2ImageFaultKind.UncleanClose, $"close failed: {ex.Message}");
            throw;
        }
        finally
        {
            // Only a clean close (checkpointed, header clean) may remove the journal; a read-only
            // image keeps it so the next open replays what was acknowledged.
            if (_host is not null && !_abandoned.Task.IsCompleted)
                await _host.ReleaseJournalAsync(Path.GetFullPath(_ctx.Path), delete: _ctx.ReadOnlyReason is null && done.Task.IsCompletedSuccessfully).ConfigureAwait(false);
        }
    }
}
