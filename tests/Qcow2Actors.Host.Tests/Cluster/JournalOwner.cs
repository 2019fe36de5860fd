using Akka.Actor;
using Akka.Persistence;

namespace Qcow2Actors.Host.Tests.Cluster;

/// <summary>
/// A persistent actor standing for an image's journal actor on some node: it recovers a persistence id (which,
/// on the fenced journal, takes the next owner generation), appends strings, deletes, and tells an observer when
/// the journal refuses it.
/// </summary>
internal sealed class JournalOwner : ReceivePersistentActor
{
    public sealed record Append(string Event);
    public sealed record GetState;
    public sealed record State(IReadOnlyList<string> Events, long LastSequenceNr);
    public sealed record DeleteTo(long SequenceNr);
    public sealed record PersistFailed(Exception Cause);

    private readonly List<string> _events = [];
    private readonly IActorRef _observer;
    private IActorRef _deleteReplyTo = ActorRefs.Nobody;

    public static Props Props(string persistenceId, string pluginId, IActorRef observer) =>
        Akka.Actor.Props.Create(() => new JournalOwner(persistenceId, pluginId, observer));

    public JournalOwner(string persistenceId, string pluginId, IActorRef observer)
    {
        PersistenceId = persistenceId;
        JournalPluginId = pluginId;
        SnapshotPluginId = "akka.persistence.no-snapshot-store";
        _observer = observer;
        Recover<string>(e => _events.Add(e));
        Command<Append>(a =>
        {
            var replyTo = Sender;
            Persist(a.Event, e =>
            {
                _events.Add(e);
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

    protected override void OnPersistFailure(Exception cause, object @event, long sequenceNr)
    {
        _observer.Tell(new PersistFailed(cause));
        base.OnPersistFailure(cause, @event, sequenceNr);
    }

    protected override void OnPersistRejected(Exception cause, object @event, long sequenceNr)
    {
        _observer.Tell(new PersistFailed(cause));
        base.OnPersistRejected(cause, @event, sequenceNr);
    }
}
