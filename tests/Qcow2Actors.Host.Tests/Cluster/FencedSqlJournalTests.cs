using Akka.Actor;
using Akka.Configuration;
using Akka.Persistence;
using Npgsql;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Tests.Journal;
using Qcow2Actors.Host.Cluster;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Host.Tests.Cluster;

/// <summary>
/// The engine's write-ahead journal on Akka.Persistence.Sql + PostgreSQL (<see cref="FencedSqlJournal"/>), as
/// cluster mode uses it: a "node" is an actor system (an <see cref="ImageHost"/>), a crash is that host going
/// away with the image never closed, and another node opening the same image from the same PostgreSQL journal
/// must replay every flushed write. The owner generation keeps a node that lost the image from writing to it.
/// </summary>
public sealed class FencedSqlJournalTests(PostgresFixture pg) : IClassFixture<PostgresFixture>, IDisposable
{
    private const string PluginId = "akka.persistence.journal.q2a-postgres";
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
    private const long DiskSize = 8L << 20;
    private readonly TempDir _dir = new();
    private readonly List<ActorSystem> _systems = [];

    private string JournalHocon => $$"""
        qcow2actors.journal.plugin-id = "{{PluginId}}"
        qcow2actors.engine.checkpoint-interval = 0s
        akka.persistence.journal.q2a-postgres {
          class = "Qcow2Actors.Host.Cluster.FencedSqlJournal, Qcow2Actors.Host"
          plugin-dispatcher = "akka.persistence.dispatchers.default-plugin-dispatcher"
          connection-string = "{{pg.Server.ConnectionString}}"
          provider-name = "PostgreSQL.15"
          auto-initialize = on
        }
        """;

    private ImageHost Node(string name) => ImageHost.Create(JournalHocon, name);

    private ActorSystem JournalNode(string name)
    {
        var system = ActorSystem.Create(name, ConfigurationFactory.ParseString(JournalHocon + "\nakka.loglevel = WARNING\n")
            .WithFallback(ImageHost.ReferenceConfig));
        _systems.Add(system);
        return system;
    }

    private static async Task<(IActorRef Actor, Inbox Inbox)> Owner(ActorSystem system, string persistenceId)
    {
        var inbox = Inbox.Create(system);
        var actor = system.ActorOf(RecordingActor.Props(persistenceId, PluginId, inbox.Receiver));
        await actor.Ask<RecordingActor.State>(new RecordingActor.GetState(), Timeout); // recovered
        return (actor, inbox);
    }

    private static async Task<byte[]> Write(Qcow2Image image, Random rng, byte[] model, int count)
    {
        for (int i = 0; i < count; i++)
        {
            int len = rng.Next(1, 200_000);
            long off = rng.NextInt64(0, DiskSize - len);
            var data = new byte[len];
            rng.NextBytes(data);
            await image.WriteAsync(off, data);
            data.CopyTo(model, off);
        }
        return model;
    }

    private async Task<long> GenerationInDatabase(string persistenceId)
    {
        await using var db = NpgsqlDataSource.Create(pg.Server.ConnectionString);
        await using var command = db.CreateCommand($"SELECT generation FROM {FencedSqlJournal.GenerationTable} WHERE persistence_id = $1");
        command.Parameters.Add(new NpgsqlParameter { Value = persistenceId });
        return (long)(await command.ExecuteScalarAsync())!;
    }

    [PostgresFact]
    public async Task Flushed_writes_of_a_crashed_node_are_replayed_by_another_node_from_postgresql()
    {
        var path = _dir.File("disk.qcow2");
        var model = new byte[DiskSize];
        var rng = new Random(13);
        var nodeA = Node("node-a");
        var image = await nodeA.CreateAsync(path, new Qcow2CreateOptions { Size = DiskSize, ClusterSize = 4096 });
        await Write(image, rng, model, 60);
        await image.FlushAsync();
        await Write(image, rng, model, 20);
        await image.WriteZeroesAsync(4096 * 40, 4096 * 10, unmap: true);
        Array.Clear(model, 4096 * 40, 4096 * 10);
        await image.FlushAsync();
        // The crash: node A's actor system goes away with the image open (nothing checkpointed).
        await nodeA.DisposeAsync();

        var pending = QemuTools.QemuImg("info", path);
        Assert.NotEqual(0, pending.ExitCode); // journal pending: QEMU refuses it by our feature name

        await using (var nodeB = Node("node-b"))
        {
            await using var reopened = await nodeB.OpenAsync(path);
            Assert.False(reopened.IsReadOnly, reopened.ReadOnlyReason);
            var back = new byte[DiskSize];
            await reopened.ReadAsync(0, back);
            Assert.Equal(model, back);
        }
        QemuTools.AssertCheckClean(path);
        QemuTools.AssertSameContent(path, model, _dir.Path);
        // Each recovery of the image's journal (node A's open, node B's replay and journal actors) took one.
        Assert.True(await GenerationInDatabase(Path.GetFullPath(path)) >= 2);
    }

    [PostgresFact]
    public async Task A_node_whose_journal_was_taken_over_has_its_next_flush_refused_and_loses_nothing_flushed()
    {
        var path = _dir.File("stale.qcow2");
        var model = new byte[DiskSize];
        var nodeA = Node("stale-a");
        var image = await nodeA.CreateAsync(path, new Qcow2CreateOptions { Size = DiskSize, ClusterSize = 4096 });
        var first = new byte[64 * 1024];
        new Random(1).NextBytes(first);
        await image.WriteAsync(0, first);
        first.CopyTo(model, 0);
        await image.FlushAsync();

        // Another node takes the journal over (as a new owner's open does, before its replay) while node A still
        // holds the image: from here on node A is a stale owner.
        var nodeB = JournalNode("takeover-b");
        await Owner(nodeB, Path.GetFullPath(path));
        await nodeB.Terminate();

        // Node A allocates new clusters: their L2 records would be its next journal append, which is refused.
        var late = new byte[64 * 1024];
        Array.Fill(late, (byte)0x5a);
        await image.WriteAsync(4L << 20, late);
        var refused = await Assert.ThrowsAnyAsync<IOException>(async () => await image.FlushAsync());
        Assert.Contains("stale owner", refused.ToString(), StringComparison.Ordinal);
        Assert.True(image.IsReadOnly);
        await nodeA.DisposeAsync();

        await using (var nodeC = Node("stale-c"))
        {
            await using var reopened = await nodeC.OpenAsync(path);
            var back = new byte[DiskSize];
            await reopened.ReadAsync(0, back);
            Assert.Equal(model, back);
        }
        QemuTools.AssertCheckClean(path);
        QemuTools.AssertSameContent(path, model, _dir.Path);
    }

    [PostgresFact]
    public async Task Appends_and_deletes_of_an_owner_whose_generation_was_taken_are_refused_by_the_database()
    {
        const string id = "fence-contract";
        var (a, aInbox) = await Owner(JournalNode("owner-a"), id);
        await a.Ask<RecordingActor.State>(new RecordingActor.Append(["a1"]), Timeout);

        var (b, _) = await Owner(JournalNode("owner-b"), id);
        Assert.Equal(["a1"], (await b.Ask<RecordingActor.State>(new RecordingActor.GetState(), Timeout)).Events);
        Assert.Equal(2, await GenerationInDatabase(id));

        var delete = await a.Ask<object>(new RecordingActor.DeleteTo(1), Timeout);
        var deleteFailure = Assert.IsType<DeleteMessagesFailure>(delete);
        Assert.IsType<StaleOwnerException>(deleteFailure.Cause);

        a.Tell(new RecordingActor.Append(["a2"]));
        var failed = Assert.IsType<RecordingActor.PersistFailed>(await aInbox.ReceiveAsync(Timeout));
        Assert.Contains("stale owner", failed.Cause.ToString(), StringComparison.Ordinal);

        Assert.Equal(["a1", "b1"], (await b.Ask<RecordingActor.State>(new RecordingActor.Append(["b1"]), Timeout)).Events);

        var (c, _) = await Owner(JournalNode("owner-c"), id);
        var recovered = await c.Ask<RecordingActor.State>(new RecordingActor.GetState(), Timeout);
        Assert.Equal(["a1", "b1"], recovered.Events);
        Assert.Equal(2, recovered.LastSequenceNr);
    }

    public void Dispose()
    {
        foreach (var system in _systems) system.Terminate().Wait(Timeout);
        _dir.Dispose();
    }
}
