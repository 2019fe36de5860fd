using Akka.Actor;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Read;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Write;

/// <summary>What a successful open hands back to <see cref="Qcow2Image"/>.</summary>
internal sealed record OpenedImage(ImageContext Context, OpenedLayer Layer, IActorRef Image);

/// <summary>
/// The root of one open image: Opening → Recovering → Ready → Closing (Corrupt/failed
/// images stay open read-only with the reason). Opening runs asynchronously (PipeTo +
/// stash), never blocking a constructor. In Ready it routes mutations to one L2 table
/// actor per L1 entry, bounds how many live, passivates idle ones, gives an idle image's
/// cached tables back, and runs checkpoints. Its timers run on the host's TimeProvider; its
/// blocking file I/O (recovery, open, checkpoint writes and fsyncs) on <see cref="BlockingIo"/>.
/// Routing and passivation are here, checkpoint and resize in <c>ImageActor.Checkpoint.cs</c>, online
/// snapshot edits in <c>ImageActor.OnlineEdit.cs</c>: all act on the one set of live table actors this
/// class owns; the idle rules are in <see cref="IdleSweep"/>. Over 450 lines because the open's states and the
/// routing, bounding and passivating of table actors all read and change that one set: split further, it would
/// have to be shared between classes.
/// </summary>
// No ConfigureAwait(false) here: code after an await in a ReceiveAsync handler calls
// Become/Context, which exist only on the actor's own context.
internal sealed partial class ImageActor : ReceiveActor, IWithUnboundedStash
{
    private sealed record Recovered(ImageHeaderBlock Block, bool HadJournal);
    private sealed record Opened(OpenedImage Image);
    private sealed record Sweep;
    // The host's metadata budget asks this image to give table memory back; or says there may be room now.
    private sealed record ShedTables;
    private sealed record RoomForTables;

    /// <summary>How many table actors are live and L2 tables cached (for tests).</summary>
    internal sealed record TableCounts(int LiveTableActors, int CachedTables, int PinnedTables);

    /// <summary>
    /// Replies with <see cref="TableCounts"/> once no table actor is being passivated (so a test
    /// sees the result of a sweep, not a moment in the middle of one).
    /// </summary>
    internal sealed record InspectTables(TaskCompletionSource<TableCounts> Reply);

    private readonly string _path;
    private readonly Qcow2OpenOptions _options;
    private readonly EngineSettings _settings;
    private readonly TaskCompletionSource<OpenedImage> _opened;
    private readonly string _persistenceId;
    private readonly ImageLockSet _locks;
    private IActorRef? _replay;
    private ImageContext? _ctx;
    private readonly Dictionary<int, IActorRef> _tables = new();
    private readonly Dictionary<IActorRef, int> _tableIndex = new();
    private readonly Dictionary<int, long> _lastUse = new();
    private readonly Dictionary<int, List<object>> _passivating = new();
    private readonly List<TaskCompletionSource<TableCounts>> _inspectors = new();
    private long _tick;
    private readonly TimeProvider _time;
    private readonly BlockingIo _io = BlockingIo.ForImage(Context.System);
    private ITimer? _checkpointTimer;
    private ITimer? _sweepTimer;
    private readonly IdleSweep _idle;
    // The host-wide metadata budget's account of this image (null without one), what a live table
    // actor is charged, and requests for tables with no actor held until the budget has room.
    private Read.MetadataCacheBudget.Account? _budget;
    private long _actorBytes;
    private List<RouteToTable> _held = new();
    private bool _shedAfterCheckpoint;

    public ImageActor(string path, Qcow2OpenOptions options, EngineSettings settings, TaskCompletionSource<OpenedImage> opened, ImageLockSet locks)
    {
        _locks = locks;
        _path = Path.GetFullPath(path);
        _options = options;
        _settings = settings;
        _opened = opened;
        _persistenceId = _path;
        _time = settings.TimeProvider;
        _idle = new IdleSweep(_time, settings.TableIdleTimeout, settings.CacheIdleTimeout);
        Opening();
    }

    public IStash Stash { get; set; } = null!;

    // locks holds the image's write lock already; the data file and backing files are added as they open.
    public static Props Props(string path, Qcow2OpenOptions options, EngineSettings settings, TaskCompletionSource<OpenedImage> opened, ImageLockSet locks) =>
        Akka.Actor.Props.Create(() => new ImageActor(path, options, settings, opened, locks));

    protected override void PreStart() => _replay = Context.ActorOf(ReplayActor.Props(_persistenceId, _settings), "replay");

    protected override void PostStop()
    {
        // Closed, failed or stopped with its host: its clusters no longer count (Qcow2Image.DisposeAsync does the same, first,
        // and untracks the gauge too).
        _ctx?.Allocator?.CloseSpace();
        var closed = new ObjectDisposedException(_path, "the image is closed");
        foreach (var m in _held) FailHeld(m.Message, closed);
        _held.Clear();
        // Its table actors stop with it; the layer's cache gives its share back when the image is disposed.
        _budget?.Close();
        _checkpointTimer?.Dispose();
        _sweepTimer?.Dispose();
        _ctx?.Metrics.Untrack();
        foreach (var i in _inspectors) i.TrySetException(new ObjectDisposedException(_path, "the image is closed"));
        _opened.TrySetException(new IOException($"'{_path}' was closed while opening"));
    }

    // ---------------------------------------------------------------- Opening / Recovering

    private void Opening()
    {
        Receive<JournalRecovered>(m => RecoverAsync(m).PipeTo(Self, success: r => r, failure: ex => new Status.Failure(ex)));
        // The read side's "asynchronous" reads complete inline on the file device: start it on an I/O thread.
        Receive<Recovered>(r => _io.RunAsync(() => OpenReadSideAsync(r)).PipeTo(Self, success: o => new Opened(o), failure: ex => new Status.Failure(ex)));
        Receive<Opened>(o =>
        {
            _ctx = o.Image.Context;
            if (_settings.JournalPluginId == Journal.FileJournal.PluginId)
                _ctx.JournalSpace = Journal.FileJournalPaths.Get(Context.System).ReservationFor(_persistenceId);
            _ctx.Refcounts = Context.ActorOf(RefcountActor.Props(_ctx, _ctx.Allocator!), "refcounts");
            _ctx.Journal = Context.ActorOf(JournalActor.Props(_ctx, _persistenceId, _ctx.MarkDirty), "journal");
            _ctx.BitmapJournal = Context.ActorOf(BitmapJournalActor.Props(_ctx), "bitmap-journal");
            if (_ctx.Layer.L2Tables.Account is { } account)
            {
                _budget = account;
                _actorBytes = Read.MetadataCacheBudget.ActorBytes(_ctx.ClusterSize);
                var self = Self;
                account.OnShed = () => self.Tell(new ShedTables());
                account.OnRoom = () => self.Tell(new RoomForTables());
            }
            // Akka.Persistence stops a journal actor whose write failed: the image is read-only from then on.
            Context.Watch(_ctx.Journal);
            StartTimers();
            Become(Ready);
            Stash.UnstashAll();
            _opened.TrySetResult(o.Image with { Image = Self });
        });
        Receive<Status.Failure>(f =>
        {
            _opened.TrySetException(f.Cause);
            Context.Stop(Self);
        });
        ReceiveAny(_ => Stash.Stash());
    }

    private async Task<Recovered> RecoverAsync(JournalRecovered journal)
    {
        // Journal replay and the refcount rebuild are long runs of blocking I/O: on an I/O thread.
        var block = await _io.Run(() =>
        {
            using var device = _options.OpenDevice(_path, writable: true);
            return ImageRecovery.Recover(device, _path, journal.Batches, _options.RebuildWithoutJournal);
        });
        // The journal's effect is in place and durable: delete it.
        var truncated = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _replay!.Tell(new TruncateJournal(truncated));
        await truncated.Task;
        return new Recovered(block, journal.Batches.Count > 0);
    }

    private async Task<OpenedImage> OpenReadSideAsync(Recovered r)
    {
        var opened = await ImageOpener.OpenAsync(_path, _options, _locks, default);
        try
        {
            var layer = (Qcow2Layer)opened.Layer;
            var ctx = new ImageContext(_path, layer.File, layer.DataFile, opened.HeaderBlock!, layer,
                Compression.CompressionCodecs.For((int)opened.HeaderBlock!.Header.CompressionType), _settings, _options.OnFault) { Io = _io };
            // The map of metadata clusters every write is checked against, as the image is now on disk.
            ctx.Snapshots = await MetadataMapBuilder.RegisterAsync(ctx.Metadata, ctx.Device, opened.HeaderBlock, layer.Views.Current, default);
            // Enabled bitmaps are loaded before the first write can change the disk; they are marked in
            // use on disk by the first write whose granules they lack (BitmapJournalActor).
            ctx.Bitmaps = await Bitmaps.BitmapSet.OpenAsync(ctx.Device, ctx.Headers.Block, track: true, default);
            // Loaded here, not in the Opened handler: a failure (a read error) then fails the open
            // with its own message and closes the files, instead of stopping the actor.
            ctx.Allocator = new RefcountAllocator(ctx, new RefcountState(ctx.Device, ctx.Header) { Map = ctx.Metadata });
            // Charged last: nothing below can fail, and a failed open must not leave a charge behind.
            if (_options.Quota is { } quota) ctx.Allocator.OpenSpace(quota);
            return new OpenedImage(ctx, opened, ActorRefs.Nobody);
        }
        catch
        {
            // Nobody else will close the files the read side opened (the locks go with the failed open).
            await opened.Layer.DisposeAsync();
            throw;
        }
    }

    // ---------------------------------------------------------------- Ready

    private void Ready()
    {
        Receive<RouteToTable>(Route);
        Receive<Sweep>(_ => SweepIdle());
        // Dirty tables are pinned in memory until a checkpoint: bound them by the cache size.
        Receive<TablesOverCache>(_ =>
        {
            if (_checkpointQueued) return;
            _checkpointQueued = true;
            Self.Tell(new CheckpointRequest(null));
        });
        Receive<ShedTables>(_ =>
        {
            _budget!.ShedDone();
            ShedForBudget();
        });
        Receive<RoomForTables>(_ => RouteHeld());
        Receive<InspectTables>(m =>
        {
            _inspectors.Add(m.Reply);
            AnswerInspectors();
        });
        Receive<ReadyToStop>(m =>
        {
            if (!_tables.TryGetValue(m.L1Index, out var child) || !child.Equals(m.Table)) return;
            // Gone from the live set at once: a checkpoint that starts before its Terminated arrives
            // must not send it Pause/WriteBack (a stopped actor never answers). It is clean, so it
            // has nothing to write back; messages for its table stay held until Terminated.
            _tables.Remove(m.L1Index);
            _ctx!.Routes.Close(m.L1Index, child);
            Context.Stop(child);
        });
        Receive<StayAlive>(m =>
        {
            // Only the live actor's answer counts: an older actor of the same table may answer late.
            if (_tables.TryGetValue(m.L1Index, out var child) && child.Equals(m.Table) && _passivating.Remove(m.L1Index, out var held))
            {
                foreach (var msg in held) child.Tell(msg);
                _ctx!.Routes.Open(m.L1Index, child);
            }
            AnswerInspectors();
        });
        Receive<Terminated>(t =>
        {
            if (t.ActorRef.Equals(_ctx!.Journal)) _ctx.Fail("the journal stopped after a failed write");
            if (!_tableIndex.Remove(t.ActorRef, out var index)) return;
            _budget?.ReleaseActor(_actorBytes);
            _ctx!.Routes.Close(index, t.ActorRef);
            // A newer actor of the table (started after an online edit stopped this one) keeps its bookkeeping and its held requests.
            bool newer = _tables.TryGetValue(index, out var live) && !live.Equals(t.ActorRef);
            if (!newer)
            {
                _tables.Remove(index);
                _lastUse.Remove(index);
                _idle.Forget(index);
                if (_passivating.Remove(index, out var held))
                    foreach (var msg in held) Route(new RouteToTable(index, msg));
            }
            // One actor fewer may be all a held request was waiting for (its image's floor).
            if (_held.Count > 0) RouteHeld();
            AnswerInspectors();
        });
        ReceiveAsync<CheckpointRequest>(async m =>
        {
            try
            {
                await CheckpointAsync(closing: false);
                m.Done?.TrySetResult();
                // Written back: the tables the budget wanted are clean now, and may go.
                if (_budget is not null && (_shedAfterCheckpoint || _held.Count > 0))
                {
                    _shedAfterCheckpoint = false;
                    PassivateOldest();
                    _budget.Budget.MakeRoom(0);
                }
            }
            catch (Exception ex)
            {
                _ctx!.Fail($"checkpoint failed: {ex.Message}");
                m.Done?.TrySetException(ex);
            }
        });
        ReceiveAsync<ResizeRequest>(async m =>
        {
            try
            {
                await ResizeAsync(m.NewSize);
                m.Done.TrySetResult();
            }
            catch (Exception ex)
            {
                m.Done.TrySetException(ex);
            }
        });
        ReceiveAsync<OnlineEditRequest>(OnlineEditAsync);
        ReceiveAsync<BitmapEditRequest>(async m =>
        {
            try
            {
                _ctx!.ThrowIfReadOnly();
                var bitmaps = _ctx.Bitmaps!;
                // An edit may read a bitmap's bits from the file: on an I/O thread.
                await _io.RunAsync(async () => { await m.Edit(bitmaps); return true; });
                await CheckpointAsync(closing: false);
                m.Done.TrySetResult();
            }
            catch (Exception ex)
            {
                m.Done.TrySetException(ex);
            }
        });
        ReceiveAsync<CloseRequest>(async m =>
        {
            try
            {
                // No direct send may reach a table after the final write-back.
                _ctx!.Routes.CloseAll();
                if (_ctx.ReadOnlyReason is null) await CheckpointAsync(closing: true, finalClose: true);
                m.Done.TrySetResult();
            }
            catch (Exception ex)
            {
                m.Done.TrySetException(ex);
            }
            finally
            {
                Become(Closed);
                Context.Stop(Self);
            }
        });
    }

    private void Closed()
    {
        ReceiveAny(msg =>
        {
            var error = new ObjectDisposedException(_path, "the image is closed");
            switch (msg)
            {
                case RouteToTable r: FailHeld(r.Message, error); break;
                case InspectTables i: i.Reply.TrySetException(error); break;
                case OnlineEditRequest e: e.Done.TrySetException(error); break;
                case ResizeRequest r: r.Done.TrySetException(error); break;
                case CheckpointRequest c: c.Done?.TrySetException(error); break;
                case BitmapEditRequest b: b.Done.TrySetException(error); break;
            }
        });
    }

    private static void FailHeld(object message, Exception error)
    {
        switch (message)
        {
            case WriteOp w: w.Done.TrySetException(error); break;
            case ZeroOp z: z.Done.TrySetException(error); break;
            case DiscardOp d: d.Done.TrySetException(error); break;
            case CompressedWriteOp c: c.Done.TrySetException(error); break;
        }
    }

    /// <summary>Routes the requests held for room in the budget again, in order (those still without room are held again).</summary>
    private void RouteHeld()
    {
        if (_held.Count == 0) return;
        var held = _held;
        _held = new List<RouteToTable>();
        foreach (var m in held) Route(m);
    }

    /// <summary>
    /// The budget is short (asked by it, or a request of ours is held): passivate the least recently
    /// used table actors above the floor (clean ones stop; dirty ones stay), and checkpoint when dirty
    /// tables hold the memory, after which they are clean and go too.
    /// </summary>
    private void ShedForBudget()
    {
        // A read-only image keeps its dirty tables for recovery: others must not wait for it.
        if (_ctx!.ReadOnlyReason is not null) _budget?.MarkStuck();
        HarvestRoutes();
        int excess = _tables.Count - Read.MetadataCacheBudget.FloorTables;
        if (excess > 0)
        {
            foreach (var (index, _) in _lastUse.Where(kv => !_passivating.ContainsKey(kv.Key)).OrderBy(kv => kv.Value).Take(Math.Max(1, excess / 2)).ToList())
                AskToStop(index);
        }
        if (_ctx!.Layer.L2Tables.PinnedCount > 0 && (excess > 0 || (_held.Count > 0 && excess == 0)) && !_checkpointQueued)
        {
            _checkpointQueued = true;
            _shedAfterCheckpoint = true;
            Self.Tell(new CheckpointRequest(null));
        }
    }

    private void Route(RouteToTable m)
    {
        if (_passivating.TryGetValue(m.L1Index, out var held)) { held.Add(m.Message); return; }
        if (!_tables.TryGetValue(m.L1Index, out var child))
        {
            if (_budget is { } budget && (_held.Count > 0 || !budget.TryAdmitActor(_actorBytes)))
            {
                // No room in the host's budget (and this image is at its floor or above): hold the
                // request until there is, making some here too. Held requests keep their order.
                bool first = _held.Count == 0;
                _held.Add(m);
                if (first)
                {
                    // At its floor or above, the image makes room among its own tables (least recently used
                    // first); below it, the neighbours above theirs were asked to shed.
                    if (_tables.Count >= Read.MetadataCacheBudget.FloorTables)
                    {
                        ShedForBudget();
                        PassivateOldest();
                    }
                    budget.WaitForRoom(_actorBytes);
                }
                return;
            }
            if (_tables.Count >= _settings.MaxLiveTableActors) PassivateOldest();
            child = Context.ActorOf(L2TableActor.Props(_ctx!, m.L1Index), $"l2-{m.L1Index}-{++_tick}");
            Context.Watch(child);
            _tables[m.L1Index] = child;
            _tableIndex[child] = m.L1Index;
        }
        else _budget?.Touch();
        _lastUse[m.L1Index] = ++_tick;
        _idle.Used(m.L1Index);
        child.Tell(m.Message);
        _ctx!.Routes.Open(m.L1Index, child);
        // Dirty tables are pinned in memory until a checkpoint, bounded by the cache size: the table actor that pins one
        // past it asks for the checkpoint (TablesOverCache), whichever way its requests came.
    }

    /// <summary>Counts the sends callers made on the tables' routes since the last look as routed here: least recently used order, idle times, activity.</summary>
    private void HarvestRoutes()
    {
        foreach (var (index, at) in _ctx!.Routes.Harvest())
        {
            if (!_lastUse.ContainsKey(index)) continue;
            _lastUse[index] = ++_tick;
            _idle.UsedAt(index, at);
        }
    }

    private void PassivateOldest()
    {
        HarvestRoutes();
        // Ask the least recently used table actors to stop if clean; messages for them wait here meanwhile.
        foreach (var (index, _) in _lastUse.Where(kv => !_passivating.ContainsKey(kv.Key)).OrderBy(kv => kv.Value).Take(Math.Max(1, _settings.MaxLiveTableActors / 8)).ToList())
            AskToStop(index);
    }

    /// <summary>Asks a live table actor to stop if it is clean; messages for its table wait here meanwhile.</summary>
    private void AskToStop(int index)
    {
        if (_passivating.ContainsKey(index) || !_tables.TryGetValue(index, out var child)) return;
        _passivating[index] = new List<object>();
        // Messages sent on the route are in the table's mailbox ahead of StopIfClean; later ones come here and wait.
        _ctx!.Routes.Close(index);
        child.Tell(new StopIfClean(index, Self));
    }

    // ---------------------------------------------------------------- timers (on _time)

    private void StartTimers()
    {
        var self = Self;
        if (_settings.CheckpointInterval > TimeSpan.Zero)
            _checkpointTimer = _time.CreateTimer(_ => self.Tell(new CheckpointRequest(null)), null,
                _settings.CheckpointInterval, _settings.CheckpointInterval);
        // One sweep serves both idle timeouts.
        if (_idle.Period is { } period)
            _sweepTimer = _time.CreateTimer(_ => self.Tell(new Sweep()), null, period, period);
    }

    private void SweepIdle()
    {
        long now = _idle.Now;
        HarvestRoutes();
        // A dirty table answers StayAlive (its only copy is in memory until the checkpoint) and is asked again later.
        foreach (var index in _idle.IdleTables(now)) AskToStop(index);
        // Requests routed here and lookups in the read cache (readers and the in-place fast path) are the image's activity.
        if (!_idle.ImageIdle(_tick + _ctx!.Layer.L2Tables.Activity, now)) return;
        // Idle: give back what can be read again. Tables changed since the last checkpoint stay (pinned,
        // their table actors answer StayAlive) until a checkpoint writes them; a later sweep takes them.
        foreach (var index in _tables.Keys.ToList()) AskToStop(index);
        _ctx.Layer.L2Tables.DropUnpinned();
        _ctx.Layer.ForgetDecompressed();
    }

    private void AnswerInspectors()
    {
        if (_inspectors.Count == 0 || _passivating.Count > 0) return;
        var cache = _ctx!.Layer.L2Tables;
        var counts = new TableCounts(_tables.Count, cache.Count, cache.PinnedCount);
        foreach (var i in _inspectors) i.TrySetResult(counts);
        _inspectors.Clear();
    }
}
