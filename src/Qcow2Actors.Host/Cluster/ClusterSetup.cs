using Akka.Actor;
using Akka.Cluster.Hosting;
using Akka.Cluster.Hosting.SBR;
using Akka.Cluster.Sharding;
using Akka.Hosting;
using Akka.Persistence;
using Akka.Remote.Hosting;
using Npgsql;
using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Cluster;

/// <summary>
/// Cluster mode's Akka set-up: remoting on the node's address, Akka.Cluster with the seed nodes and a keep-majority
/// split-brain resolver, and the image shard region (one <see cref="ImageEntity"/> per image, remembered in
/// PostgreSQL so a survivor starts it again when its node dies).
/// </summary>
internal static class ClusterSetup
{
    /// <summary>The shard region's type name.</summary>
    public const string TypeName = "q2a-images";

    public static void Configure(AkkaConfigurationBuilder builder, ClusterSettings cluster)
    {
        builder
            .WithRemoting(cluster.Hostname, cluster.Port)
            .WithClustering(new ClusterOptions
            {
                SeedNodes = [.. cluster.SeedNodes],
                SplitBrainResolver = new KeepMajorityOption(),
            })
            .WithShardRegion<ImageEntity>(TypeName,
                (_, _, resolver) => entityId => ImageEntity.Props(entityId, resolver.GetService<HostRegistry>()),
                new ImageMessageExtractor(cluster.Shards),
                new ShardOptions
                {
                    RememberEntities = true,
                    RememberEntitiesStore = RememberEntitiesStore.Eventsourced,
                    StateStoreMode = StateStoreMode.DData,
                    JournalPluginId = ClusterSettings.ShardingJournalPluginId,
                    SnapshotPluginId = ClusterSettings.ShardingSnapshotPluginId,
                    HandOffStopMessage = new ImageEntity.Release(),
                });
        // Operations (clusterops): the owner list's and un-serve's node agent, the downed-node journal fence.
        Ownership.OwnershipSetup.Configure(builder, cluster);
        // Forwarded NBD requests and replies (Forwarding/*): a binary serializer, and frames that hold a 1 MiB chunk.
        builder.AddHocon($$"""
            akka.actor.serializers.q2a-forwarding = "{{typeof(Forwarding.ForwardingSerializer).AssemblyQualifiedName}}"
            akka.actor.serialization-bindings {
              "{{typeof(Forwarding.IForwardingMessage).AssemblyQualifiedName}}" = q2a-forwarding
            }
            akka.actor.serialization-identifiers {
              "{{typeof(Forwarding.ForwardingSerializer).AssemblyQualifiedName}}" = {{Forwarding.ForwardingSerializer.Id}}
            }
            akka.remote.dot-netty.tcp.maximum-frame-size = 4MiB
            akka.remote.dot-netty.tcp.send-buffer-size = 4MiB
            akka.remote.dot-netty.tcp.receive-buffer-size = 4MiB
            """, HoconAddMode.Prepend);
    }

    /// <summary>
    /// Makes the PostgreSQL plugins create their tables now, one node at a time (a session advisory lock): two
    /// nodes creating the same table at once can fail in PostgreSQL even with IF NOT EXISTS, and a journal whose
    /// initialisation failed stops for good.
    /// </summary>
    public static async Task WarmUpJournalsAsync(ActorSystem system, ClusterSettings cluster, CancellationToken cancellationToken)
    {
        await using var db = NpgsqlDataSource.Create(cluster.ConnectionString);
        await using var connection = await db.OpenConnectionAsync(cancellationToken);
        await using (var take = new NpgsqlCommand("SELECT pg_advisory_lock(7102414)", connection))
            await take.ExecuteNonQueryAsync(cancellationToken);
        try
        {
            foreach (var (journal, snapshots) in new[]
            {
                (ClusterSettings.JournalPluginId, "akka.persistence.no-snapshot-store"),
                (ClusterSettings.ShardingJournalPluginId, ClusterSettings.ShardingSnapshotPluginId),
            })
            {
                var probe = system.ActorOf(Props.Create(() => new WarmUp(journal, snapshots)));
                try
                {
                    await probe.Ask<WarmUp.Done>(WarmUp.Ask.Instance, TimeSpan.FromSeconds(60), cancellationToken);
                }
                finally
                {
                    system.Stop(probe);
                }
            }
        }
        finally
        {
            await using var release = new NpgsqlCommand("SELECT pg_advisory_unlock(7102414)", connection);
            await release.ExecuteNonQueryAsync(CancellationToken.None);
        }
    }

    /// <summary>A persistent actor that only recovers (which initialises its journal and snapshot store).</summary>
    private sealed class WarmUp : ReceivePersistentActor
    {
        public sealed class Ask { public static readonly Ask Instance = new(); }
        public sealed record Done;

        public WarmUp(string journal, string snapshots)
        {
            JournalPluginId = journal;
            SnapshotPluginId = snapshots;
            // Commands are stashed until recovery completes: the answer means both stores are ready.
            Command<Ask>(_ => Sender.Tell(new Done()));
        }

        public override string PersistenceId => "q2a-journal-warm-up";
    }
}
