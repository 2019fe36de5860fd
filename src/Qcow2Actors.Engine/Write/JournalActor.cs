using Akka.Actor;
using Akka.Persistence;
using Qcow2Actors.Engine.Metadata;

namespace Qcow2Actors.Engine.Write;

/// <summary>
/// The image's write-ahead journal, an Akka.Persistence actor. Records accumulate in
/// memory, encoded as they arrive, in the image's <see cref="JournalInbox"/>; a flush makes the
/// data durable (fdatasync), makes sure the header's dirty and journal-pending bits are
/// durable, then persists everything gathered as ONE message (a group commit per flush,
/// never one event per guest write) and only then acknowledges. Flushes that arrive together share one batch. The fdatasync runs on the
/// engine's I/O threads (<see cref="BlockingIo"/>) while this actor's mailbox waits; the batch is
/// taken from the inbox just before the sync starts, so it holds exactly what was appended before it
/// (records that arrive during the sync wait for the next flush).
/// </summary>
// No ConfigureAwait(false): Persist after the await needs the actor's context.
internal sealed class JournalActor : ReceivePersistentActor
{
    private sealed record DoFlush;

    private readonly ImageContext _ctx;
    private readonly Func<bool> _markDirty;
    private readonly BlockingIo _io;
    private List<TaskCompletionSource> _waiters = new();
    private readonly List<JournalBatch>? _recovered = new();
    private bool _flushScheduled;
    private bool _markerDurable;
    private TaskCompletionSource? _truncating;

    public JournalActor(ImageContext ctx, string persistenceId, Func<bool> markDirty)
    {
        _ctx = ctx;
        _io = ctx.Io ?? BlockingIo.For(Context.System);
        _markDirty = markDirty;
        PersistenceId = persistenceId;
        JournalPluginId = ctx.Settings.JournalPluginId;
        SnapshotPluginId = ctx.Settings.SnapshotPluginId;

        Recover<JournalBatch>(b => _recovered!.Add(b));
        // A journal plugin that keeps the event objects (instead of serializing them) replays the pending form.
        Recover<PendingJournalBatch>(b => _recovered!.Add(b.ToBatch()));
        Recover<RecoveryCompleted>(_ => Context.Parent.Tell(new JournalRecovered(_recovered!.ToArray())));

        Command<JournalInbox.RecordsRejected>(m => FailInFlight($"journal record cannot be encoded: {m.Error.Message}", m.Error));
        Command<JournalInbox.CheckpointDue>(_ => Context.Parent.Tell(new CheckpointRequest(null)));
        Command<FlushRequest>(m =>
        {
            _waiters.Add(m.Done);
            if (!_flushScheduled)
            {
                _flushScheduled = true;
                Self.Tell(new DoFlush());
            }
        });
        CommandAsync<DoFlush>(_ => FlushAsync());
        Command<PersistBitmapRecords>(m =>
        {
            if (_ctx.ReadOnlyReason is { } reason)
            {
                m.Done.TrySetException(new IOException($"'{_ctx.Path}' is read-only: {reason}"));
                return;
            }
            _ctx.JournalRecords.CountPersisted(m.Records.Count);
            _bitmapInFlight.Add(m.Done);
            Persist(new JournalBatch(m.Records), _ =>
            {
                _bitmapInFlight.Remove(m.Done);
                m.Done.TrySetResult();
            });
        });
        Command<TruncateJournal>(m =>
        {
            _ctx.JournalRecords.CheckpointTaken();
            if (LastSequenceNr == 0) { m.Done.TrySetResult(); return; }
            _truncating = m.Done;
            DeleteMessages(LastSequenceNr);
        });
        Command<DeleteMessagesSuccess>(_ => { _truncating?.TrySetResult(); _truncating = null; });
        Command<DeleteMessagesFailure>(f =>
        {
            _truncating?.TrySetException(new IOException($"journal truncation failed: {f.Cause.Message}", f.Cause));
            _truncating = null;
        });
    }

    public override string PersistenceId { get; }

    /// <summary>Records not yet persisted (for tests and the close path).</summary>
    public int PendingCount => _ctx.JournalRecords.Count;

    // Taken by a flush that had to persist the empty marker first; the flush that resumes it persists these too.
    private JournalInbox.Taken? _carried;

    private async Task FlushAsync()
    {
        if (_ctx.ReadOnlyReason is null && !_markerDurable && !_ctx.BitsOnDisk && _carried is null)
        {
            // Decided on what is taken, not on a count read earlier: appends do not wait for this actor.
            _carried = _ctx.JournalRecords.Take();
            if (_carried is not null)
            {
                // Every time the header is about to say "records pending", the journal must already
                // hold a message (file and directory entry durable): then a pending header with an
                // empty journal can only mean a lost journal. An empty batch serves; the flush runs
                // again once it is durable.
                Persist(new JournalBatch([]), _ =>
                {
                    _markerDurable = true;
                    // Goes on as a message of its own: a persist callback cannot await the fsync.
                    Self.Tell(new DoFlush());
                });
                return;
            }
        }
        _markerDurable = false;
        _flushScheduled = false;
        var waiters = _waiters;
        _waiters = new List<TaskCompletionSource>();
        // Taken before the sync: records appended while it runs may describe data it does not cover. A batch carried
        // over the marker goes first; what was appended since joins as a second batch of the same flush.
        var taken = new List<JournalInbox.Taken>(2);
        if (_carried is not null) taken.Add(_carried);
        _carried = null;
        try
        {
            _ctx.ThrowIfReadOnly();
            if (_ctx.JournalRecords.Take() is { } more) taken.Add(more);
            bool records = taken.Count > 0;
            await _io.Run(() =>
            {
                // The bits go to disk with the same fdatasync as the data, before the first batch.
                if (records) _markDirty();
                _ctx.DataDevice?.Flush();
                _ctx.Device.Flush();
            });
        }
        catch (Exception ex)
        {
            // A failed fsync is final: the kernel may have dropped the dirty pages already.
            _ctx.Fail($"flush failed: {ex.Message}");
            var error = new IOException($"'{_ctx.Path}': flush failed, the image is now read-only: {ex.Message}", ex);
            foreach (var w in waiters) w.TrySetException(error);
            foreach (var d in taken.SelectMany(t => t.Durable)) d.TrySetException(error);
            return;
        }
        if (taken.Count == 0)
        {
            foreach (var w in waiters) w.TrySetResult();
            return;
        }
        PersistAll(taken.Select(t => t.Batch), persisted =>
        {
            var (batch, freed, durable) = taken.First(t => ReferenceEquals(t.Batch, persisted));
            // Written: the file's end now counts these bytes instead.
            _ctx.JournalSpace?.AddPending(-(long)batch.Count * Qcow2Actors.Engine.Journal.JournalReservation.RecordBound);
            // Before the waiters: a checkpoint that resumes on this flush then finds the punches and
            // releases queued ahead of its write-backs, so they finish before the devices close.
            if (freed.Count > 0) _ctx.Refcounts.Tell(new ReleaseQuarantine([.. freed]));
            foreach (var d in durable) d.TrySetResult();
            if (ReferenceEquals(batch, taken[^1].Batch)) foreach (var w in waiters) w.TrySetResult();
        });
        _inFlight = waiters;
    }

    private List<TaskCompletionSource>? _inFlight;
    private readonly List<TaskCompletionSource> _bitmapInFlight = new();

    protected override void OnPersistFailure(Exception cause, object @event, long sequenceNr)
    {
        FailInFlight($"journal write failed: {cause.Message}", cause);
        base.OnPersistFailure(cause, @event, sequenceNr);
    }

    protected override void OnPersistRejected(Exception cause, object @event, long sequenceNr)
    {
        FailInFlight($"journal write rejected: {cause.Message}", cause);
        base.OnPersistRejected(cause, @event, sequenceNr);
    }

    protected override void OnRecoveryFailure(Exception reason, object? message = null)
    {
        Context.Parent.Tell(new Status.Failure(new IOException($"'{_ctx.Path}': journal replay failed: {reason.Message}", reason)));
        base.OnRecoveryFailure(reason, message);
    }

    private void FailInFlight(string reason, Exception cause)
    {
        _ctx.Fail(reason);
        var error = new IOException($"'{_ctx.Path}': {reason}; the image is now read-only", cause);
        foreach (var w in _inFlight ?? []) w.TrySetException(error);
        foreach (var w in _waiters) w.TrySetException(error);
        _waiters.Clear();
        foreach (var w in _bitmapInFlight) w.TrySetException(error);
        _bitmapInFlight.Clear();
    }

    public static Props Props(ImageContext ctx, string persistenceId, Func<bool> markDirty) =>
        Akka.Actor.Props.Create(() => new JournalActor(ctx, persistenceId, markDirty));
}
