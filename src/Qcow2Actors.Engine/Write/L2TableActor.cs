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
/// cluster that is referenced with a refcount of zero. This file holds the lifecycle (mailbox
/// states, passivation, write-back); L2TableActor.Operations.cs executes what the
/// <see cref="WritePlanner"/> decides.
/// </summary>
// No ConfigureAwait(false) in this actor: continuations of ReceiveAsync handlers must
// resume on the actor's context (Akka suspends the mailbox until the handler completes).
// Table operations (writes, zeroes, discards, compressed writes) are the exception (RunInline): they stash the
// mailbox themselves while they wait, and their continuations run off the actor's context (so _self, not Self).
internal sealed partial class L2TableActor : ReceiveActor, IWithUnboundedStash
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
    private readonly BlockingIo _io;
    // Self, for continuations that run off the actor's context (RunInline): Self itself needs the context.
    private readonly IActorRef _self;
    private readonly IActorRef _parent;

    public L2TableActor(ImageContext ctx, int l1Index)
    {
        _ctx = ctx;
        _io = ctx.Io ?? BlockingIo.For(Context.System);
        _self = Self;
        _parent = Context.Parent;
        _l1Index = l1Index;
        _g = ctx.Geometry;
        _entries = _g.L2Entries;
        // Idle passivation is the parent's (ImageActor, on the engine's TimeProvider): it sends StopIfClean.
        Active();
    }

    public IStash Stash { get; set; } = null!;

    // The table this actor published is no longer covered by its budget charge: the cache takes it over (or drops it).
    protected override void PostStop()
    {
        if (_tableOffset != 0) _ctx.Layer.L2Tables.Adopt(_tableOffset);
    }

    public static Props Props(ImageContext ctx, int l1Index) => Akka.Actor.Props.Create(() => new L2TableActor(ctx, l1Index)).WithDispatcher(TableDispatcher.ConfigPath);

    private void Active()
    {
        Receive<WriteOp>(m => RunInline(Guard(m.Done, false, m.Space, false, () => WriteAsync(m.Offset, m.Data))));
        Receive<ZeroOp>(m => RunInline(Guard(m.Done, m.Unmap, m.Space, false, () => ZeroAsync(m.Offset, m.Length, m.Unmap))));
        Receive<DiscardOp>(m => RunInline(Guard(m.Done, true, null, true, () => DiscardAsync(m.Offset, m.Length, m.Deallocate))));
        Receive<CompressedWriteOp>(m => RunInline(Guard(m.Done, false, m.Space, false, () => WriteCompressedAsync(m.Offset, m.Cluster))));
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
                m.Parent.Tell(new StayAlive(m.L1Index, Self));
                return;
            }
            // The parent stops us (it may be mid-checkpoint now and still send us Pause and
            // WriteBack, which must be answered); until then we only acknowledge those.
            Become(Stopping);
            m.Parent.Tell(new ReadyToStop(m.L1Index, Self));
        });
    }

    /// <summary>
    /// Lets a table operation (a guest write, zeroes, a discard, a compressed write) that has already ended go
    /// without Akka's asynchronous-handler machinery (the usual case: the table is loaded and device writes complete
    /// inline), which saves suspending the mailbox and scheduling it again for every operation. One that waits (a
    /// table load, a call on an I/O thread) holds every other message in the stash until it ends, so the table still
    /// runs one operation at a time; its continuations run on the thread pool meanwhile, and touch only this actor's
    /// state and messages to other actors.
    /// </summary>
    private void RunInline(Task operation)
    {
        if (operation.IsCompleted) return; // Guard completes the request itself and never faults
        BecomeStacked(WaitingForOperation);
        operation.ContinueWith(static (_, self) => ((IActorRef)self!).Tell(OperationEnded.Instance), _self,
            CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    private void WaitingForOperation()
    {
        Receive<OperationEnded>(_ =>
        {
            UnbecomeStacked();
            Stash.UnstashAll();
        });
        ReceiveAny(_ => Stash.Stash());
    }

    /// <summary>A table operation that waited has ended (<see cref="RunInline"/>).</summary>
    private sealed class OperationEnded
    {
        public static readonly OperationEnded Instance = new();
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
        Receive<StopIfClean>(m => m.Parent.Tell(new StayAlive(m.L1Index, Self)));
        ReceiveAny(_ => Stash.Stash());
    }

    private async Task Guard(TaskCompletionSource done, bool freeingOnly, SpaceReservation? request, bool unlimited, Func<Task> body)
    {
        // With a quota, this operation's allocations draw from a reservation of its own under the
        // request's (EnsureQuota), given back when it ends.
        _space = Refcounts.Space is { } account ? new SpaceReservation(account.Quota, request) : null;
        _unlimited = unlimited;
        Exception? failure = null;
        try
        {
            _ctx.ThrowIfReadOnly();
            // Journal space for this request's records is reserved before anything changes: a full
            // disk fails this request here, instead of the commit that would have to persist them.
            if (_ctx.JournalSpace is { Unchecked: false } space && space.Headroom < Journal.JournalReservation.Margin)
                await _io.Run(() => space.EnsureHeadroom(freeingOnly));
            await body();
        }
        catch (Exception ex)
        {
            if (ex is Qcow2ImageCorruptException) _ctx.Fail(Qcow2ImageFaultKind.Corrupt, ex.Message);
            if (ex is not Qcow2NoSpaceException && Qcow2NoSpaceException.IsNoSpace(ex))
                ex = new Qcow2NoSpaceException($"'{_ctx.Path}': no space left on the host for this request: {ex.Message}", ex);
            if (ex is Qcow2NoSpaceException) _ctx.Report(Qcow2ImageFaultKind.NoSpace, ex.Message);
            failure = ex;
        }
        finally
        {
            _space?.Dispose();
            _space = null;
        }
        // Completed only after this operation's reservation went back to the request's: the caller
        // disposes that one as soon as every operation has completed.
        if (failure is null) done.TrySetResult();
        else done.TrySetException(failure);
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
                    if (bytes is null) return;
                    MetadataEvents.Raise(MetadataEvent.CheckpointWriteBack, _ctx.Path);
                    _ctx.Device.Write(bytes, offset);
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
}
