using Akka.Actor;
using Akka.Persistence;
using Qcow2Actors.Engine.Metadata;

namespace Qcow2Actors.Engine.Write;

/// <summary>
/// Reads an image's journal once at open, hands the batches to its parent, and after the
/// parent has applied them in place and flushed, deletes them. It exists so that replay
/// happens before the image's tables are loaded; the running <see cref="JournalActor"/>
/// then starts from an empty journal.
/// </summary>
internal sealed class ReplayActor : ReceivePersistentActor
{
    private readonly List<JournalBatch> _batches = new();
    private TaskCompletionSource? _truncating;

    public ReplayActor(string persistenceId, EngineSettings settings)
    {
        PersistenceId = persistenceId;
        JournalPluginId = settings.JournalPluginId;
        SnapshotPluginId = settings.SnapshotPluginId;
        Recover<JournalBatch>(b => _batches.Add(b));
        Recover<PendingJournalBatch>(b => _batches.Add(b.ToBatch())); // a plugin that keeps objects (JournalActor says why)
        Recover<RecoveryCompleted>(_ => Context.Parent.Tell(new JournalRecovered(_batches.ToArray())));
        Command<TruncateJournal>(m =>
        {
            if (LastSequenceNr == 0) { m.Done.TrySetResult(); Context.Stop(Self); return; }
            _truncating = m.Done;
            DeleteMessages(LastSequenceNr);
        });
        Command<DeleteMessagesSuccess>(_ => { _truncating?.TrySetResult(); Context.Stop(Self); });
        Command<DeleteMessagesFailure>(f =>
        {
            _truncating?.TrySetException(new IOException($"journal truncation failed: {f.Cause.Message}", f.Cause));
            Context.Stop(Self);
        });
    }

    public override string PersistenceId { get; }

    protected override void OnRecoveryFailure(Exception reason, object? message = null)
    {
        Context.Parent.Tell(new Status.Failure(new IOException($"journal replay failed: {reason.Message}", reason)));
        base.OnRecoveryFailure(reason, message);
    }

    public static Props Props(string persistenceId, EngineSettings settings) =>
        Akka.Actor.Props.Create(() => new ReplayActor(persistenceId, settings));
}
