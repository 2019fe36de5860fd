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
/// actor per L1 entry, bounds how many live, and runs checkpoints.
/// </summary>
// No ConfigureAwait(false) here: code after an await in a ReceiveAsync handler calls
// Become/Context, which exist only on the actor's own context.
internal sealed class ImageActor : ReceiveActor, IWithUnboundedStash
{
    private sealed record Recovered(ImageHeaderBlock Block, bool HadJournal);
    private sealed record Opened(OpenedImage Image);

    private readonly string _path;
    private readonly Qcow2OpenOptions _options;
    private readonly EngineSettings _settings;
    private readonly TaskCompletionSource<OpenedImage> _opened;
    private readonly string _persistenceId;
    private IActorRef? _replay;
    private ImageContext? _ctx;
    private OpenedLayer? _layer;
    private readonly Dictionary<int, IActorRef> _tables = new();
    private readonly Dictionary<IActorRef, int> _tableIndex = new();
    private readonly Dictionary<int, long> _lastUse = new();
    private readonly Dictionary<int, List<object>> _passivating = new();
    private long _tick;
    private ICancelable? _checkpointTimer;

    public ImageActor(string path, Qcow2OpenOptions options, EngineSettings settings, TaskCompletionSource<OpenedImage> opened)
    {
        _path = Path.GetFullPath(path);
        _options = options;
        _settings = settings;
        _opened = opened;
        _persistenceId = _path;
        Opening();
    }

    public IStash Stash { get; set; } = null!;

    public static Props Props(string path, Qcow2OpenOptions options, EngineSettings settings, TaskCompletionSource<OpenedImage> opened) =>
        Akka.Actor.Props.Create(() => new ImageActor(path, options, settings, opened));

    protected override void PreStart() => _replay = Context.ActorOf(ReplayActor.Props(_persistenceId, _settings), "replay");

    protected override void PostStop()
    {
        _checkpointTimer?.Cancel();
        _opened.TrySetException(new IOException($"'{_path}' was closed while opening"));
    }

    // ---------------------------------------------------------------- Opening / Recovering

    private void Opening()
    {
        Receive<JournalRecovered>(m => RecoverAsync(m).PipeTo(Self, success: r => r, failure: ex => new Status.Failure(ex)));
        Receive<Recovered>(r => OpenReadSideAsync(r).PipeTo(Self, success: o => new Opened(o), failure: ex => new Status.Failure(ex)));
        Receive<Opened>(o =>
        {
            _ctx = o.Image.Context;
            _layer = o.Image.Layer;
            var refcounts = new RefcountState(_ctx.Device, _ctx.Header);
            _ctx.RefcountState = refcounts;
            _ctx.Refcounts = Context.ActorOf(RefcountActor.Props(_ctx, refcounts), "refcounts");
            _ctx.Journal = Context.ActorOf(JournalActor.Props(_ctx, _persistenceId, _ctx.MarkDirty), "journal");
            if (_settings.CheckpointInterval > TimeSpan.Zero)
                _checkpointTimer = Context.System.Scheduler.ScheduleTellRepeatedlyCancelable(
                    _settings.CheckpointInterval, _settings.CheckpointInterval, Self, new CheckpointRequest(null), Self);
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
        using var device = _options.OpenDevice(_path, writable: true);
        var cluster0 = new byte[Math.Min(2 * 1024 * 1024, device.Length)];
        device.Read(cluster0, 0);
        var block = ImageHeaderBlock.Read(cluster0, IncompatibleFeatures.KnownToQcow2Actors);
        var h = block.Header;
        if (h.IsCorrupt)
            throw new IOException($"'{_path}' is marked corrupt (incompatible bit 1); repair it with 'q2a check -r all' before writing");
        if (h.IsJournalPending)
        {
            if (journal.Batches.Count == 0 && !_options.RebuildWithoutJournal && !File.Exists(_path + ".journal"))
                throw new IOException($"'{_path}' has journal records pending but its journal '{_path}.journal' is missing; " +
                    "run 'q2a recover --rebuild' to rebuild from what the image holds (writes since the last checkpoint are lost)");
            RecordApplier.Apply(device, block, journal.Batches);
            device.Flush();
        }
        // We do not maintain bitmaps: clear autoclear bits before the first write, as the spec asks.
        bool wasDirty = h.IsDirty || h.IsJournalPending;
        if (wasDirty || h.AutoclearFeatures != 0)
        {
            h.AutoclearFeatures &= AutoclearFeatures.RawExternalData;
            if (block.Bitmaps is not null) block.Bitmaps = null;
            // The tables are in place and durable; what a crash can still have left is leaked
            // clusters (allocations whose records did not make it), which the rebuild below removes.
            h.IncompatibleFeatures &= ~(IncompatibleFeatures.Dirty | IncompatibleFeatures.JournalPending);
            if (h.IncompatibleFeatures == IncompatibleFeatures.None) V2Promotion.Restore(block);
            WriteHeader(device, block);
            device.Flush();
        }
        if (wasDirty)
        {
            // Our journal's leftovers, or an image QEMU left dirty with lazy refcounts: make every
            // refcount equal to the references the tables hold.
            if (RecordApplier.FixRefcounts(device, block) > 0)
            {
                WriteHeader(device, block);
                device.Flush();
            }
        }
        // The journal's effect is in place and durable: delete it.
        var truncated = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _replay!.Tell(new TruncateJournal(truncated));
        await truncated.Task;
        return new Recovered(block, journal.Batches.Count > 0);
    }

    private static void WriteHeader(IBlockDevice device, ImageHeaderBlock block)
    {
        var cluster = new byte[block.Header.ClusterSize];
        block.Write(cluster);
        device.Write(cluster.AsSpan(0, block.EncodedLength), 0);
    }

    private async Task<OpenedImage> OpenReadSideAsync(Recovered r)
    {
        var opened = await ImageOpener.OpenAsync(_path, _options, default);
        var layer = (Qcow2Layer)opened.Layer;
        var ctx = new ImageContext(_path, layer.File, layer.DataFile, opened.HeaderBlock!, layer,
            Compression.CompressionCodecs.For((int)opened.HeaderBlock!.Header.CompressionType), _settings);
        return new OpenedImage(ctx, opened, ActorRefs.Nobody);
    }

    // ---------------------------------------------------------------- Ready

    private void Ready()
    {
        Receive<RouteToTable>(Route);
        Receive<StayAlive>(m =>
        {
            if (_passivating.Remove(m.L1Index, out var held) && _tables.TryGetValue(m.L1Index, out var child))
                foreach (var msg in held) child.Tell(msg);
        });
        Receive<Terminated>(t =>
        {
            if (!_tableIndex.Remove(t.ActorRef, out var index)) return;
            _tables.Remove(index);
            _lastUse.Remove(index);
            if (_passivating.Remove(index, out var held))
                foreach (var msg in held) Route(new RouteToTable(index, msg));
        });
        ReceiveAsync<CheckpointRequest>(async m =>
        {
            try
            {
                await CheckpointAsync(closing: false);
                m.Done?.TrySetResult();
            }
            catch (Exception ex)
            {
                _ctx!.Fail($"checkpoint failed: {ex.Message}");
                m.Done?.TrySetException(ex);
            }
        });
        ReceiveAsync<CloseRequest>(async m =>
        {
            try
            {
                if (_ctx!.ReadOnlyReason is null) await CheckpointAsync(closing: true);
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
                case RouteToTable { Message: WriteOp w }: w.Done.TrySetException(error); break;
                case RouteToTable { Message: ZeroOp z }: z.Done.TrySetException(error); break;
                case RouteToTable { Message: DiscardOp d }: d.Done.TrySetException(error); break;
                case RouteToTable { Message: CompressedWriteOp c }: c.Done.TrySetException(error); break;
            }
        });
    }

    private void Route(RouteToTable m)
    {
        if (_passivating.TryGetValue(m.L1Index, out var held)) { held.Add(m.Message); return; }
        if (!_tables.TryGetValue(m.L1Index, out var child))
        {
            if (_tables.Count >= _settings.MaxLiveTableActors) PassivateOldest();
            child = Context.ActorOf(L2TableActor.Props(_ctx!, m.L1Index), $"l2-{m.L1Index}-{++_tick}");
            Context.Watch(child);
            _tables[m.L1Index] = child;
            _tableIndex[child] = m.L1Index;
        }
        _lastUse[m.L1Index] = ++_tick;
        child.Tell(m.Message);
        // Dirty tables are pinned in memory until a checkpoint: bound them by the cache size.
        if (!_checkpointQueued && _ctx!.Layer.L2Tables.PinnedCount > _settings.L2CacheSize)
        {
            _checkpointQueued = true;
            Self.Tell(new CheckpointRequest(null));
        }
    }

    private void PassivateOldest()
    {
        // Ask the least recently used table actors to stop if clean; messages for them wait here meanwhile.
        foreach (var (index, _) in _lastUse.Where(kv => !_passivating.ContainsKey(kv.Key)).OrderBy(kv => kv.Value).Take(Math.Max(1, _settings.MaxLiveTableActors / 8)).ToList())
        {
            _passivating[index] = new List<object>();
            _tables[index].Tell(new StopIfClean(index, Self));
        }
    }

    private bool _checkpointQueued;

    private async Task CheckpointAsync(bool closing)
    {
        _checkpointQueued = false;
        var ctx = _ctx!;
        var tables = _tables.Values.ToList();
        await Task.WhenAll(tables.Select(t => Send(t, d => new PauseMutations(d))));
        try
        {
            // Barrier: every release the tables sent before pausing has reached the refcount actor.
            var barrier = new TaskCompletionSource<ulong[]>(TaskCreationOptions.RunContinuationsAsynchronously);
            ctx.Refcounts.Tell(new GetRefcounts([], barrier));
            await barrier.Task;
            if (!ctx.BitsOnDisk && ctx.Layer.L2Tables.PinnedCount == 0 && !closing) return;
            await Send(ctx.Journal, d => new FlushRequest(d));
            await Task.WhenAll(tables.Select(t => Send(t, d => new WriteBackTable(d))));
            var table = new TaskCompletionSource<(long Offset, int Clusters)>(TaskCreationOptions.RunContinuationsAsynchronously);
            ctx.Refcounts.Tell(new WriteBackRefcounts(table));
            var (offset, clusters) = await table.Task;
            RecordApplier.WriteL1(ctx.Device, ctx.Header, ctx.Layer.Views.Current.L1);
            ctx.UpdateHeader(h => { h.RefcountTableOffset = offset; h.RefcountTableClusters = clusters; });
            ctx.Device.Flush();
            await Send(ctx.Journal, d => new TruncateJournal(d));
            if (ctx.BitsOnDisk)
            {
                ctx.MarkClean();
                ctx.Device.Flush();
            }
        }
        catch (Exception ex) when (ex is IOException)
        {
            ctx.Fail($"checkpoint failed: {ex.Message}");
            throw;
        }
        finally
        {
            if (!closing) foreach (var t in tables) t.Tell(new ResumeMutations());
        }
    }

    private static Task Send(IActorRef target, Func<TaskCompletionSource, object> message)
    {
        var tcs = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        target.Tell(message(tcs));
        return tcs.Task;
    }
}
