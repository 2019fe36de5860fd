using Akka.Actor;
using Akka.Persistence;

namespace Qcow2Actors.Engine.Tests.Journal;

/// <summary>
/// A small persistent actor on the seam the engine's journal actor will use: the journal
/// plugin id is a constructor argument, snapshots are off, and persist failures, rejections
/// and recovery failures are reported to an observer.
/// </summary>
public sealed class RecordingActor : ReceivePersistentActor
{
    public sealed record Append(IReadOnlyList<string> Events, bool Atomic = true);
    public sealed record AppendObject(object Event);
    public sealed record GetState;
    public sealed record State(IReadOnlyList<string> Events, long LastSequenceNr);
    public sealed record DeleteTo(long SequenceNr);
    public sealed record PersistFailed(Exception Cause, long SequenceNr);
    public sealed record PersistRejected(Exception Cause, long SequenceNr);
    public sealed record RecoveryFailed(Exception Reason);

    private readonly List<string> _events = [];
    private readonly IActorRef? _observer;
    private readonly long _recoverTo;
    private IActorRef _deleteReplyTo = ActorRefs.Nobody;

    internal static Props Props(string persistenceId, string? journalPluginId, IActorRef? observer = null, long recoverTo = long.MaxValue) =>
        Akka.Actor.Props.Create(() => new RecordingActor(persistenceId, journalPluginId, observer, recoverTo));

    public RecordingActor(string persistenceId, string? journalPluginId, IActorRef? observer, long recoverTo)
    {
        PersistenceId = persistenceId;
        if (journalPluginId is not null) JournalPluginId = journalPluginId;
        SnapshotPluginId = "akka.persistence.no-snapshot-store";
        _observer = observer;
        _recoverTo = recoverTo;

        Recover<string>(e => _events.Add(e));
        Command<Append>(a =>
        {
            var replyTo = Sender;
            var left = a.Events.Count;
            void Handler(string e)
            {
                _events.Add(e);
                if (--left == 0) replyTo.Tell(new State(_events.ToList(), LastSequenceNr));
            }
            if (a.Atomic) PersistAll(a.Events, Handler);
            else
            {
                // Deliberate: several AtomicWrites in one journal batch is the case under test.
#pragma warning disable AK1006
                foreach (var e in a.Events) Persist(e, Handler);
#pragma warning restore AK1006
            }
        });
        Command<AppendObject>(a =>
        {
            var replyTo = Sender;
            Persist(a.Event, e =>
            {
                _events.Add(e.ToString() ?? "");
                replyTo.Tell(new State(_events.ToList(), LastSequenceNr));
            });
        });
        Command<GetState>(_ => Sender.Tell(new State(_events.ToList(), LastSequenceNr)));
        Command<DeleteTo>(d =>
        {
            _deleteReplyTo = Sender;
            DeleteMessages(d.SequenceNr);
        });
        Command<DeleteMessagesSuccess>(s => _deleteReplyTo.Tell(s));
        Command<DeleteMessagesFailure>(f => _deleteReplyTo.Tell(f));
    }

    public override string PersistenceId { get; }

    public override Recovery Recovery => new(SnapshotSelectionCriteria.None, _recoverTo);

    protected override void OnPersistFailure(Exception cause, object @event, long sequenceNr)
    {
        _observer?.Tell(new PersistFailed(cause, sequenceNr));
        base.OnPersistFailure(cause, @event, sequenceNr);
    }

    protected override void OnPersistRejected(Exception cause, object @event, long sequenceNr)
    {
        _observer?.Tell(new PersistRejected(cause, sequenceNr));
        base.OnPersistRejected(cause, @event, sequenceNr);
    }

    protected override void OnRecoveryFailure(Exception reason, object? message = null)
    {
        _observer?.Tell(new RecoveryFailed(reason));
        base.OnRecoveryFailure(reason, message);
    }
}
