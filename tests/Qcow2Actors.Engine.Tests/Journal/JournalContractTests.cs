using System.Collections.Immutable;
using Akka.Actor;
using Akka.Configuration;
using Akka.Persistence;
using Akka.TestKit;
using Qcow2Actors.Engine.Journal;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Journal;

/// <summary>
/// The contract cases of Akka.NET's persistence TCK JournalSpec (written here from its list of
/// cases; the TCK package is not available), talking to the journal actor directly. Each test
/// starts from five events of one persistence id, written as four AtomicWrites (the last holding
/// two events). Run against each plugin by a subclass.
/// </summary>
public abstract class JournalContractTests : Akka.TestKit.Xunit2.TestKit
{
    private const string Pid = "contract-pid";
    private readonly string _pluginId;
    private readonly string _writerGuid = Guid.NewGuid().ToString("N");
    private readonly TestProbe _receiver;

    protected JournalContractTests(Config pluginConfig, string pluginId)
        : base(ConfigurationFactory.ParseString("""
            akka.loglevel = WARNING
            akka.persistence.snapshot-store.plugin = "akka.persistence.no-snapshot-store"
            akka.actor.serializers.contract-failing = "Qcow2Actors.Engine.Tests.Journal.FailingSerializer, Qcow2Actors.Engine.Tests"
            akka.actor.serialization-bindings {
              "Qcow2Actors.Engine.Tests.Journal.UnserializableEvent, Qcow2Actors.Engine.Tests" = contract-failing
            }
            """).WithFallback(pluginConfig).WithFallback(FileJournal.ReferenceConfig))
    {
        _pluginId = pluginId;
        _receiver = CreateTestProbe();
        WriteFiveEvents();
    }

    /// <summary>Whether replayed events carry the writer GUID they were written with (the TCK asks it).</summary>
    protected virtual bool ReplaysWriterGuid => true;

    private IActorRef Journal => Persistence.Instance.Apply(Sys).JournalFor(_pluginId);

    private Persistent Event(long seqNr, IActorRef sender) =>
        new($"a-{seqNr}", seqNr, Pid, string.Empty, false, sender, _writerGuid);

    private void WriteFiveEvents()
    {
        var sender = CreateTestProbe().Ref;
        var writes = new[]
        {
            new AtomicWrite(Event(1, sender)), new AtomicWrite(Event(2, sender)), new AtomicWrite(Event(3, sender)),
            new AtomicWrite(ImmutableList.Create<IPersistentRepresentation>(Event(4, sender), Event(5, sender))),
        };
        var probe = CreateTestProbe();
        Journal.Tell(new WriteMessages(writes, probe.Ref, 1));
        probe.ExpectMsg<WriteMessagesSuccessful>();
        for (long i = 1; i <= 5; i++)
        {
            var n = i;
            probe.ExpectMsg<WriteMessageSuccess>(m => m.Persistent.SequenceNr == n && (string)m.Persistent.Payload == $"a-{n}");
        }
    }

    private void ExpectReplayed(params long[] seqNrs)
    {
        foreach (var n in seqNrs)
            _receiver.ExpectMsg<ReplayedMessage>(m =>
                m.Persistent.SequenceNr == n && (string)m.Persistent.Payload == $"a-{n}" &&
                m.Persistent.PersistenceId == Pid && !m.Persistent.IsDeleted);
    }

    private void Replay(long from, long to, long max, string pid = Pid) =>
        Journal.Tell(new ReplayMessages(from, to, max, pid, _receiver.Ref));

    private void ExpectRecoverySuccess(long highest) =>
        Assert.Equal(highest, _receiver.ExpectMsg<RecoverySuccess>().HighestSequenceNr);

    [Fact]
    public void Replays_all_messages()
    {
        Replay(1, long.MaxValue, long.MaxValue);
        ExpectReplayed(1, 2, 3, 4, 5);
        ExpectRecoverySuccess(5);
    }

    [Fact]
    public void Replays_from_a_lower_bound()
    {
        Replay(3, long.MaxValue, long.MaxValue);
        ExpectReplayed(3, 4, 5);
        ExpectRecoverySuccess(5);
    }

    [Fact]
    public void Replays_to_an_upper_bound()
    {
        Replay(1, 3, long.MaxValue);
        ExpectReplayed(1, 2, 3);
        ExpectRecoverySuccess(5);
    }

    [Fact]
    public void Replays_up_to_a_count_limit()
    {
        Replay(1, long.MaxValue, 3);
        ExpectReplayed(1, 2, 3);
        ExpectRecoverySuccess(5);
    }

    [Fact]
    public void Replays_between_lower_and_upper_bounds()
    {
        Replay(2, 3, long.MaxValue);
        ExpectReplayed(2, 3);
        ExpectRecoverySuccess(5);
    }

    [Fact]
    public void Replays_between_bounds_up_to_a_count_limit()
    {
        Replay(2, 5, 2);
        ExpectReplayed(2, 3);
        ExpectRecoverySuccess(5);
    }

    [Fact]
    public void Replays_a_single_message_when_the_bounds_are_equal()
    {
        Replay(2, 2, long.MaxValue);
        ExpectReplayed(2);
        ExpectRecoverySuccess(5);
    }

    [Fact]
    public void Replays_a_single_message_when_the_count_limit_is_one()
    {
        Replay(2, 4, 1);
        ExpectReplayed(2);
        ExpectRecoverySuccess(5);
    }

    [Fact]
    public void Replays_nothing_when_the_count_limit_is_zero()
    {
        Replay(2, 4, 0);
        ExpectRecoverySuccess(5);
    }

    [Fact]
    public void Replays_nothing_when_the_lower_bound_is_above_the_upper_bound()
    {
        Replay(3, 2, long.MaxValue);
        ExpectRecoverySuccess(5);
    }

    [Fact]
    public void Replays_nothing_for_a_persistence_id_that_never_wrote()
    {
        Replay(0, long.MaxValue, long.MaxValue, "never-written");
        ExpectRecoverySuccess(0);
    }

    [Fact]
    public void Messages_deleted_up_to_a_sequence_number_are_not_replayed()
    {
        var deleter = CreateTestProbe();
        Journal.Tell(new DeleteMessagesTo(Pid, 3, deleter.Ref));
        Assert.Equal(3, deleter.ExpectMsg<DeleteMessagesSuccess>().ToSequenceNr);
        Replay(1, long.MaxValue, long.MaxValue);
        ExpectReplayed(4, 5);
        ExpectRecoverySuccess(5);
    }

    [Fact]
    public void Deleting_everything_keeps_the_highest_sequence_number()
    {
        Journal.Tell(new DeleteMessagesTo(Pid, long.MaxValue, _receiver.Ref));
        Assert.Equal(long.MaxValue, _receiver.ExpectMsg<DeleteMessagesSuccess>().ToSequenceNr);
        Replay(0, long.MaxValue, long.MaxValue);
        ExpectRecoverySuccess(5);
    }

    [Fact]
    public void Several_atomic_writes_of_one_batch_replay_in_order_after_the_first()
    {
        var sender = CreateTestProbe().Ref;
        var probe = CreateTestProbe();
        Journal.Tell(new WriteMessages(new[]
        {
            new AtomicWrite(ImmutableList.Create<IPersistentRepresentation>(Event(6, sender), Event(7, sender), Event(8, sender))),
            new AtomicWrite(Event(9, sender)),
        }, probe.Ref, 2));
        probe.ExpectMsg<WriteMessagesSuccessful>();
        for (long i = 6; i <= 9; i++)
        {
            var n = i;
            probe.ExpectMsg<WriteMessageSuccess>(m => m.Persistent.SequenceNr == n);
        }
        Replay(1, long.MaxValue, long.MaxValue);
        ExpectReplayed(1, 2, 3, 4, 5, 6, 7, 8, 9);
        ExpectRecoverySuccess(9);
    }

    [Fact]
    public void A_payload_holding_an_actor_ref_round_trips_and_a_write_without_sender_replays_without_one()
    {
        var probe = CreateTestProbe();
        var payload = new RefPayload(probe.Ref);
        Journal.Tell(new WriteMessages(new[]
        {
            new AtomicWrite(new Persistent(payload, 6, Pid, sender: ActorRefs.NoSender, writerGuid: _writerGuid)),
        }, probe.Ref, 3));
        probe.ExpectMsg<WriteMessagesSuccessful>();
        probe.ExpectMsg<WriteMessageSuccess>(m => IsRefEvent(m.Persistent, payload));
        Replay(6, long.MaxValue, long.MaxValue);
        _receiver.ExpectMsg<ReplayedMessage>(m => IsRefEvent(m.Persistent, payload));
        ExpectRecoverySuccess(6);
    }

    private bool IsRefEvent(IPersistentRepresentation p, RefPayload expected) =>
        p.SequenceNr == 6 && p.PersistenceId == Pid && (p.WriterGuid == _writerGuid || !ReplaysWriterGuid) &&
        (p.Sender is null || p.Sender.Equals(ActorRefs.NoSender) || p.Sender.Equals(Sys.DeadLetters)) &&
        p.Payload is RefPayload r && r.Ref.Equals(expected.Ref);

    [Fact]
    public void A_write_that_cannot_be_serialized_is_rejected_alone_and_its_neighbours_are_written()
    {
        var probe = CreateTestProbe();
        var writes = Enumerable.Range(6, 3).Select(i => new AtomicWrite(new Persistent(
            i == 7 ? new UnserializableEvent() : $"a-{i}", i, Pid, sender: ActorRefs.NoSender, writerGuid: _writerGuid))).ToArray();
        Journal.Tell(new WriteMessages(writes, probe.Ref, 4));
        probe.ExpectMsg<WriteMessagesSuccessful>();
        probe.ExpectMsg<WriteMessageSuccess>(m => m.Persistent.SequenceNr == 6);
        probe.ExpectMsg<WriteMessageRejected>(m => m.Persistent.SequenceNr == 7 && m.Persistent.Payload is UnserializableEvent);
        probe.ExpectMsg<WriteMessageSuccess>(m => m.Persistent.SequenceNr == 8);
        Replay(6, long.MaxValue, long.MaxValue);
        ExpectReplayed(6, 8);
        ExpectRecoverySuccess(8);
    }
}

/// <summary>A payload that carries an actor reference, as the TCK's serialization case writes.</summary>
public sealed record RefPayload(IActorRef Ref);

/// <summary>An event bound to <see cref="FailingSerializer"/>: the journal must reject it without failing.</summary>
public sealed class UnserializableEvent;

/// <summary>A serializer that refuses every object, standing in for a payload the configured serializer cannot handle.</summary>
public sealed class FailingSerializer(ExtendedActorSystem system) : Akka.Serialization.Serializer(system)
{
    public override int Identifier => 917_001;

    public override bool IncludeManifest => false;

    public override byte[] ToBinary(object obj) => throw new InvalidOperationException($"{obj.GetType().Name} cannot be serialized");

    public override object FromBinary(byte[] bytes, Type? type) => throw new InvalidOperationException("nothing was serialized");
}

/// <summary>The contract on our file journal.</summary>
public sealed class FileJournalContractTests : JournalContractTests
{
    private static readonly TempDir SharedDir = new();

    public FileJournalContractTests()
        : base(ConfigurationFactory.ParseString($"""
            akka.persistence.journal.plugin = "{FileJournal.PluginId}"
            akka.persistence.journal.qcow2-file.dir = "{Path.Combine(SharedDir.Path, Guid.NewGuid().ToString("N"))}"
            """), FileJournal.PluginId)
    {
    }
}

/// <summary>The contract on Akka.Persistence.Sql over SQLite, the reference.</summary>
public sealed class SqliteJournalContractTests : JournalContractTests
{
    private static readonly TempDir SharedDir = new();

    public SqliteJournalContractTests()
        : base(ConfigurationFactory.ParseString($$"""
            akka.persistence.journal.plugin = "akka.persistence.journal.sql"
            akka.persistence.journal.sql {
              class = "Akka.Persistence.Sql.Journal.SqlWriteJournal, Akka.Persistence.Sql"
              connection-string = "Data Source={{Path.Combine(SharedDir.Path, Guid.NewGuid().ToString("N") + ".db")}};Pooling=False"
              provider-name = "SQLite.MS"
              auto-initialize = on
            }
            """), "akka.persistence.journal.sql")
    {
    }

    /// <summary>Akka.Persistence.Sql 1.5.73 on SQLite replays a writer GUID of its own, not the one written.</summary>
    protected override bool ReplaysWriterGuid => false;
}
