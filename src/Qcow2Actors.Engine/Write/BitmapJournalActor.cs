using Akka.Actor;
using Qcow2Actors.Engine.Bitmaps;
using Qcow2Actors.Engine.Metadata;

namespace Qcow2Actors.Engine.Write;

/// <summary>
/// Makes the tracked bitmaps crash-consistent: a write whose granules are not yet durable in a
/// tracked bitmap waits here until the journal holds them (<see cref="BitmapRangesSet"/>), so a crash
/// can keep the data only with its bits. The first such batch after a store also names the bitmaps
/// as stored (<see cref="BitmapTracked"/>, recovery's proof that the journal covers them), then sets
/// their in-use flags and the header's journal-pending bit with one flush. Touches that arrive
/// together share one journal write. A checkpoint holds it from before it snapshots the bits until
/// the journal is emptied (<see cref="HoldBitmapJournal"/>), so no granule journaled into the
/// journal being emptied can be missing from what was stored.
/// </summary>
// No ConfigureAwait(false): state after an await belongs to the actor's own context.
internal sealed class BitmapJournalActor : ReceiveActor
{
    private sealed record JournalNow;

    private readonly ImageContext _ctx;
    private readonly BlockingIo _io;
    private List<BitmapTouch> _waiting = new();
    private bool _held;
    private bool _scheduled;

    public BitmapJournalActor(ImageContext ctx)
    {
        _ctx = ctx;
        _io = ctx.Io ?? BlockingIo.For(Context.System);
        Receive<BitmapTouch>(m =>
        {
            _waiting.Add(m);
            Schedule();
        });
        // Answered only between journal writes: the mailbox waits while one runs.
        Receive<HoldBitmapJournal>(m =>
        {
            _held = true;
            m.Done.TrySetResult();
        });
        Receive<ReleaseBitmapJournal>(_ =>
        {
            _held = false;
            Schedule();
        });
        ReceiveAsync<JournalNow>(_ => JournalAsync());
    }

    public static Props Props(ImageContext ctx) => Akka.Actor.Props.Create(() => new BitmapJournalActor(ctx));

    protected override void PostStop()
    {
        var closed = new ObjectDisposedException(_ctx.Path, "the image is closed");
        foreach (var t in _waiting) t.Done.TrySetException(closed);
        _waiting.Clear();
    }

    private void Schedule()
    {
        if (_held || _scheduled || _waiting.Count == 0) return;
        _scheduled = true;
        Self.Tell(new JournalNow());
    }

    private async Task JournalAsync()
    {
        _scheduled = false;
        if (_held) return; // the release schedules again
        var touches = _waiting;
        _waiting = new List<BitmapTouch>();
        try
        {
            _ctx.ThrowIfReadOnly();
            var set = _ctx.Bitmaps!;
            // A racing writer's batch, or a store, may have made some durable since they were asked for.
            var ranges = touches.Where(t => set.NeedsJournal(t.Offset, t.Length)).Select(t => (t.Offset, t.Length)).ToList();
            if (ranges.Count > 0)
            {
                bool first = !set.JournaledSinceStore;
                var records = new List<MetadataRecord>();
                if (first) records.AddRange(set.Entries.Where(e => e.Tracked).Select(e => new BitmapTracked(e.Name, e.Directory.TableOffset)));
                records.Add(new BitmapRangesSet(ranges));
                var persisted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                _ctx.Journal.Tell(new PersistBitmapRecords(records, persisted));
                await persisted.Task;
                if (first)
                {
                    // The journal holds a message before the header says so (as JournalActor keeps it);
                    // in-use tells every other reader the stored bits are stale from here on.
                    await _io.Run(() =>
                    {
                        BitmapWriter.MarkInUse(_ctx);
                        _ctx.MarkDirty();
                        _ctx.Device.Flush();
                    });
                    set.JournaledSinceStore = true;
                }
                foreach (var (offset, length) in ranges) set.MarkDurable(offset, length);
            }
            foreach (var t in touches) t.Done.TrySetResult();
        }
        catch (Exception ex)
        {
            // The data these writes carry must not be issued: their bits may not be recoverable.
            _ctx.Fail($"bitmap journal write failed: {ex.Message}");
            var error = ex as IOException ?? new IOException($"'{_ctx.Path}': bitmap journal write failed, the image is now read-only: {ex.Message}", ex);
            foreach (var t in touches) t.Done.TrySetException(error);
        }
        Schedule();
    }
}
