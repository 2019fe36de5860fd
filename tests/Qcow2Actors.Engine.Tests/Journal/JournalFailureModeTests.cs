using Akka.Actor;
using Akka.Configuration;
using Akka.Persistence;
using Akka.Persistence.TestKit;
using static Qcow2Actors.Engine.Tests.Journal.FileJournalTests;
using static Qcow2Actors.Engine.Tests.Journal.RecordingActor;

namespace Qcow2Actors.Engine.Tests.Journal;

/// <summary>
/// How journal trouble reaches a persistent actor on the plugin seam the engine uses
/// (journal plugin id passed in), with Akka.Persistence.TestKit's interceptable journal:
/// a failed write stops the actor via OnPersistFailure, a rejected one calls
/// OnPersistRejected and the actor carries on, a slow one holds later commands back.
/// </summary>
public sealed class JournalFailureModeTests : IDisposable
{
    private const string TestJournalId = "akka.persistence.journal.test";
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);
    private readonly ActorSystem _system;
    private readonly ITestJournal _journal;

    public JournalFailureModeTests()
    {
        var config = ConfigurationFactory.ParseString($$"""
            akka.loglevel = ERROR
            akka.stdout-loglevel = ERROR
            akka.persistence.journal.plugin = "{{TestJournalId}}"
            akka.persistence.journal.test {
              class = "Akka.Persistence.TestKit.TestJournal, Akka.Persistence.TestKit"
              plugin-dispatcher = "akka.actor.default-dispatcher"
            }
            akka.persistence.snapshot-store.plugin = "akka.persistence.no-snapshot-store"
            """);
        _system = ActorSystem.Create("journal-failures", config);
        _journal = TestJournal.FromRef(Persistence.Instance.Apply(_system).JournalFor(TestJournalId));
    }

    private (IActorRef Actor, Func<TimeSpan, Task<T>> Next) StartObserved<T>(string persistenceId)
    {
        var (probe, next) = ChannelActor.Create<T>();
        var actor = _system.ActorOf(RecordingActor.Props(persistenceId, TestJournalId, _system.ActorOf(probe)));
        return (actor, next);
    }

    [Fact]
    public async Task A_failed_write_stops_the_actor_through_OnPersistFailure_and_stores_nothing()
    {
        await _journal.OnWrite.Fail();
        var (actor, next) = StartObserved<PersistFailed>("fails");
        var terminated = actor.WatchAsync();
        actor.Tell(new Append(["lost"]));

        var failed = await next(Timeout);
        Assert.IsType<TestJournalFailureException>(failed.Cause);
        Assert.Equal(1, failed.SequenceNr);
        Assert.True(await terminated.WaitAsync(Timeout));

        await _journal.OnWrite.Pass();
        var again = _system.ActorOf(RecordingActor.Props("fails", TestJournalId));
        Assert.Empty((await again.Ask<State>(new GetState(), Timeout)).Events);
    }

    [Fact]
    public async Task A_rejected_write_calls_OnPersistRejected_and_the_actor_keeps_running()
    {
        await _journal.OnWrite.Reject();
        var (actor, next) = StartObserved<PersistRejected>("rejects");
        actor.Tell(new Append(["refused"]));

        var rejected = await next(Timeout);
        Assert.IsType<TestJournalRejectionException>(rejected.Cause);

        await _journal.OnWrite.Pass();
        var state = await actor.Ask<State>(new Append(["accepted"]), Timeout);
        Assert.Equal(["accepted"], state.Events);
        Assert.Equal(2, state.LastSequenceNr);
    }

    [Fact]
    public async Task A_slow_write_holds_back_later_commands_until_it_is_durable()
    {
        var actor = _system.ActorOf(RecordingActor.Props("slow", TestJournalId));
        await actor.Ask<State>(new GetState(), Timeout);
        var gate = await JournalWriteGate.CloseOn(_journal);

        var persisted = actor.Ask<State>(new Append(["x"]), Timeout);
        var query = actor.Ask<State>(new GetState(), Timeout);
        await gate.Entered.WaitAsync(Timeout);
        // The write is held in the journal: the command after it waits, stashed, instead of seeing the state without it.
        Assert.False(query.IsCompleted, "a command after the persist was answered while the write was still held");
        Assert.False(persisted.IsCompleted, "the persist was acknowledged while the write was still held");
        gate.Open();
        var seen = await query;
        Assert.True(persisted.IsCompletedSuccessfully);
        Assert.Equal(["x"], seen.Events);
    }

    [Fact]
    public async Task A_failed_replay_calls_OnRecoveryFailure()
    {
        var writer = _system.ActorOf(RecordingActor.Props("unreadable", TestJournalId));
        await writer.Ask<State>(new Append(["stored"]), Timeout);
        await writer.GracefulStop(Timeout);
        // The test journal's recovery interceptor runs per replayed message, hence the event above.
        await _journal.OnRecovery.Fail();
        var (actor, next) = StartObserved<RecoveryFailed>("unreadable");
        var terminated = actor.WatchAsync();
        Assert.IsType<TestJournalFailureException>((await next(Timeout)).Reason);
        Assert.True(await terminated.WaitAsync(Timeout));
    }

    public void Dispose() => _system.Terminate().Wait(Timeout);
}
