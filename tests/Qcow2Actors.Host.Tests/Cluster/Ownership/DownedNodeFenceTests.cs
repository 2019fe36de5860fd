using Akka.Actor;
using Akka.Cluster;
using Akka.Configuration;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Npgsql;
using Qcow2Actors.Host.Cluster;
using Qcow2Actors.Host.Cluster.Ownership;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Host.Tests.Cluster.Ownership;

/// <summary>
/// The fence on a downed member's journals (<see cref="DownedNodeFence"/>), on three in-process cluster nodes and a
/// real PostgreSQL: a survivor fences the downed member's journals once it has looked again, and a node that is
/// shutting down by then (as a paused node does once it resumes and its resolver downs it with the others) fences
/// nobody.
/// </summary>
public sealed class DownedNodeFenceTests(PostgresFixture pg) : IClassFixture<PostgresFixture>, IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
    private readonly List<ActorSystem> _systems = [];

    /// <summary>A fake clock that also says when the fence asked it for its confirmation timer.</summary>
    private sealed class WatchedClock : FakeTimeProvider
    {
        public TaskCompletionSource TimerAsked { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = base.CreateTimer(callback, state, dueTime, period);
            if (dueTime == DownedNodeFence.ConfirmAfter) TimerAsked.TrySetResult();
            return timer;
        }
    }

    private ActorSystem Node(string name)
    {
        var system = ActorSystem.Create("fence", ConfigurationFactory.ParseString($"""
            akka.actor.provider = cluster
            akka.remote.dot-netty.tcp.hostname = "127.0.0.1"
            akka.remote.dot-netty.tcp.port = 0
            akka.loglevel = WARNING
            akka.coordinated-shutdown.run-by-clr-shutdown-hook = off
            akka.cluster.roles = ["{name}"]
            """));
        _systems.Add(system);
        return system;
    }

    /// <summary>Three nodes, all up as the first sees them.</summary>
    private async Task<(ActorSystem A, ActorSystem B, ActorSystem C)> ClusterAsync()
    {
        var (a, b, c) = (Node("a"), Node("b"), Node("c"));
        var seed = Akka.Cluster.Cluster.Get(a).SelfAddress;
        var inbox = Inbox.Create(a);
        Akka.Cluster.Cluster.Get(a).Subscribe(inbox.Receiver, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsEvents, typeof(ClusterEvent.MemberUp));
        await Task.WhenAll(new[] { a, b, c }.Select(s => Akka.Cluster.Cluster.Get(s).JoinAsync(seed))).WaitAsync(Timeout);
        var up = new HashSet<Address>();
        while (up.Count < 3) up.Add(((ClusterEvent.MemberUp)await inbox.ReceiveAsync(Timeout)).Member.Address);
        return (a, b, c);
    }

    /// <summary>A database of its own with the owner-generation table: one journal owned by <paramref name="owner"/>.</summary>
    private async Task<string> GenerationsAsync(string name, Address owner)
    {
        var connection = await PostgresDatabases.CreateAsync(pg.Server, name);
        await using var data = NpgsqlDataSource.Create(connection);
        await using var table = data.CreateCommand($"""
            CREATE TABLE {FencedSqlJournal.GenerationTable} (persistence_id varchar(255) PRIMARY KEY, generation bigint NOT NULL, owner text NOT NULL, taken_at timestamptz NOT NULL);
            INSERT INTO {FencedSqlJournal.GenerationTable} VALUES ('disk1', 1, '{owner}', now());
            """);
        await table.ExecuteNonQueryAsync();
        return connection;
    }

    /// <summary>Once the fence answers, it has subscribed: the down that follows reaches it as an event, not in its snapshot.</summary>
    private static async Task<IActorRef> StartedAsync(IActorRef fence)
    {
        await fence.Ask<ActorIdentity>(new Identify(null), Timeout);
        return fence;
    }

    private static async Task<(long Generation, string Owner)> JournalAsync(string connection)
    {
        await using var data = NpgsqlDataSource.Create(connection);
        await using var query = data.CreateCommand($"SELECT generation, owner FROM {FencedSqlJournal.GenerationTable} WHERE persistence_id = 'disk1'");
        await using var reader = await query.ExecuteReaderAsync();
        await reader.ReadAsync();
        return (reader.GetInt64(0), reader.GetString(1));
    }

    /// <summary>
    /// Three nodes, the fence on the first, the third's journal in <paramref name="database"/>; the first downs the
    /// third and the fence has asked for its confirmation timer.
    /// </summary>
    private async Task<(ActorSystem A, Address Gone, string Connection, WatchedClock Clock, IActorRef Fence)> DownTheThirdAsync(string database)
    {
        var (a, _, c) = await ClusterAsync();
        var gone = Akka.Cluster.Cluster.Get(c).SelfAddress;
        var connection = await GenerationsAsync(database, gone);
        var clock = new WatchedClock();
        var fence = await StartedAsync(a.ActorOf(DownedNodeFence.Props(connection, NullLogger.Instance, clock)));
        Akka.Cluster.Cluster.Get(a).Down(gone);
        await clock.TimerAsked.Task.WaitAsync(Timeout);
        return (a, gone, connection, clock, fence);
    }

    [PostgresFact]
    public async Task A_survivor_fences_the_downed_members_journals_once_it_has_looked_again()
    {
        var (a, gone, connection, clock, _) = await DownTheThirdAsync("fence_survivor");
        Assert.Equal((1, gone.ToString()), await JournalAsync(connection)); // nothing before the second look
        clock.Advance(DownedNodeFence.ConfirmAfter);

        var deadline = DateTime.UtcNow + Timeout;
        var journal = await JournalAsync(connection);
        while (journal.Generation == 1 && DateTime.UtcNow < deadline) journal = await JournalAsync(connection);
        Assert.Equal(2, journal.Generation);
        Assert.Contains($"{gone} downed, seen by {Akka.Cluster.Cluster.Get(a).SelfAddress}", journal.Owner, StringComparison.Ordinal);
    }

    [PostgresFact]
    public async Task A_node_shutting_down_when_it_looks_again_fences_nobody()
    {
        // As a resumed paused node: it sees the member downed, and its own shutdown begins before the second look.
        var (a, gone, connection, clock, fence) = await DownTheThirdAsync("fence_leaving");
        var shutdown = CoordinatedShutdown.Get(a).Run(CoordinatedShutdown.ClusterLeavingReason.Instance);
        clock.Advance(DownedNodeFence.ConfirmAfter);
        // The fence has handled its second look once it answers after it (a stopped fence answers nothing: also none).
        try { await fence.Ask<ActorIdentity>(new Identify(null), TimeSpan.FromSeconds(5)); }
        catch (Exception e) when (e is AskTimeoutException or TaskCanceledException) { }
        await shutdown.WaitAsync(Timeout);

        Assert.Equal((1, gone.ToString()), await JournalAsync(connection));
    }

    public void Dispose()
    {
        foreach (var system in _systems) system.Terminate().Wait(Timeout);
    }
}
