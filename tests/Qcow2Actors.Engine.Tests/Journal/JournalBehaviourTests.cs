using Akka.Actor;
using Akka.Configuration;
using Akka.Persistence;
using Qcow2Actors.Engine.Journal;
using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Engine.Tests.Journal.RecordingActor;

namespace Qcow2Actors.Engine.Tests.Journal;

/// <summary>
/// What any journal the engine runs on must do, run against each plugin by a subclass:
/// our file journal and Akka.Persistence.Sql on SQLite. Every test that recovers does so in a
/// fresh actor (and some in a fresh actor system), so state comes from storage, not memory.
/// </summary>
public abstract class JournalBehaviourTests : IDisposable
{
    private readonly List<ActorSystem> _systems = [];
    private int _systemCount;

    protected TempDir Dir { get; } = new();

    /// <summary>Configuration that makes <see cref="PluginId"/> a working journal storing under <see cref="Dir"/>.</summary>
    protected abstract Config PluginConfig { get; }

    protected abstract string PluginId { get; }

    protected static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);

    protected ActorSystem NewSystem()
    {
        var config = ConfigurationFactory.ParseString("""
            akka.loglevel = WARNING
            akka.stdout-loglevel = WARNING
            akka.persistence.snapshot-store.plugin = "akka.persistence.no-snapshot-store"
            """)
            .WithFallback(PluginConfig)
            .WithFallback(FileJournal.ReferenceConfig);
        var system = ActorSystem.Create($"journal-test-{++_systemCount}", config);
        _systems.Add(system);
        return system;
    }

    protected async Task<IActorRef> Start(ActorSystem system, string persistenceId, long recoverTo = long.MaxValue)
    {
        var actor = system.ActorOf(RecordingActor.Props(persistenceId, PluginId, recoverTo: recoverTo));
        await actor.Ask<State>(new GetState(), Timeout); // returns once recovery is done
        return actor;
    }

    protected static Task<State> Persist(IActorRef actor, params string[] events) =>
        actor.Ask<State>(new Append(events), Timeout);

    protected static Task<State> StateOf(IActorRef actor) => actor.Ask<State>(new GetState(), Timeout);

    protected static async Task Stop(IActorRef actor) => await actor.GracefulStop(Timeout);

    protected async Task<State> Recovered(string persistenceId, ActorSystem? system = null, long recoverTo = long.MaxValue)
    {
        var actor = await Start(system ?? NewSystem(), persistenceId, recoverTo);
        var state = await StateOf(actor);
        await Stop(actor);
        return state;
    }

    protected async Task Shutdown(ActorSystem system)
    {
        await system.Terminate().WaitAsync(Timeout);
        _systems.Remove(system);
    }

    [Fact]
    public async Task Persisted_batches_replay_in_order_into_a_new_actor()
    {
        var system = NewSystem();
        var actor = await Start(system, "order");
        await Persist(actor, "a", "b", "c");
        await actor.Ask<State>(new Append(["d", "e"], Atomic: false), Timeout);
        await Persist(actor, "f");
        await Stop(actor);

        var state = await Recovered("order", system);
        Assert.Equal(["a", "b", "c", "d", "e", "f"], state.Events);
        Assert.Equal(6, state.LastSequenceNr);
    }

    [Fact]
    public async Task Highest_sequence_number_is_recovered_and_numbering_continues()
    {
        var system = NewSystem();
        var actor = await Start(system, "highest");
        await Persist(actor, "1", "2", "3");
        await Stop(actor);
        actor = await Start(system, "highest");
        Assert.Equal(3, (await StateOf(actor)).LastSequenceNr);
        Assert.Equal(4, (await Persist(actor, "4")).LastSequenceNr);
    }

    [Fact]
    public async Task Recovery_can_stop_at_a_sequence_number()
    {
        var system = NewSystem();
        var actor = await Start(system, "bounded");
        await Persist(actor, "1", "2", "3", "4");
        await Stop(actor);
        Assert.Equal(["1", "2"], (await Recovered("bounded", system, recoverTo: 2)).Events);
    }

    [Fact]
    public async Task Deleted_messages_are_not_replayed_and_numbering_continues()
    {
        var system = NewSystem();
        var actor = await Start(system, "delete");
        await Persist(actor, "1", "2", "3");
        await Persist(actor, "4", "5");
        Assert.IsType<DeleteMessagesSuccess>(await actor.Ask<object>(new DeleteTo(3), Timeout));
        await Stop(actor);

        actor = await Start(system, "delete");
        var state = await StateOf(actor);
        Assert.Equal(["4", "5"], state.Events);
        Assert.Equal(5, state.LastSequenceNr);
        Assert.Equal(6, (await Persist(actor, "6")).LastSequenceNr);
        await Stop(actor);
        Assert.Equal(["4", "5", "6"], (await Recovered("delete", system)).Events);
    }

    [Fact]
    public async Task Deleting_everything_keeps_the_highest_sequence_number()
    {
        var system = NewSystem();
        var actor = await Start(system, "delete-all");
        await Persist(actor, "1", "2", "3");
        Assert.IsType<DeleteMessagesSuccess>(await actor.Ask<object>(new DeleteTo(long.MaxValue), Timeout));
        await Stop(actor);
        await Shutdown(system);

        var state = await Recovered("delete-all");
        Assert.Empty(state.Events);
        Assert.Equal(3, state.LastSequenceNr);
    }

    [Fact]
    public async Task Events_survive_a_restart_of_the_actor_system()
    {
        var system = NewSystem();
        var actor = await Start(system, "reopen");
        await Persist(actor, "x", "y");
        await Shutdown(system);

        var state = await Recovered("reopen");
        Assert.Equal(["x", "y"], state.Events);
    }

    [Fact]
    public async Task Persistence_ids_keep_separate_streams()
    {
        var system = NewSystem();
        var a = await Start(system, "image-a");
        var b = await Start(system, "image-b");
        await Task.WhenAll(Persist(a, "a1", "a2"), Persist(b, "b1"));
        await Persist(a, "a3");
        await Stop(a);
        await Stop(b);
        Assert.Equal(["a1", "a2", "a3"], (await Recovered("image-a", system)).Events);
        Assert.Equal(["b1"], (await Recovered("image-b", system)).Events);
    }

    public void Dispose()
    {
        foreach (var system in _systems.ToArray()) system.Terminate().Wait(Timeout);
        Dir.Dispose();
        GC.SuppressFinalize(this);
    }
}
