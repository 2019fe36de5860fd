using Akka.Actor;
using Akka.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Qcow2Actors.Host.Config;
using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Cluster.Ownership;

/// <summary>Cluster mode's operations actors on every node: the <see cref="NodeAgent"/> and the <see cref="DownedNodeFence"/>.</summary>
internal static class OwnershipSetup
{
    /// <summary>The serializer binding of the messages between agents (laid under the config file's keys).</summary>
    public const string Hocon = """
        akka.actor.serializers.q2a-ownership = "Qcow2Actors.Host.Cluster.Ownership.OwnershipSerializer, Qcow2Actors.Host"
        akka.actor.serialization-bindings { "Qcow2Actors.Host.Cluster.Ownership.IOwnershipMessage, Qcow2Actors.Host" = q2a-ownership }

        """;

    public static void Configure(AkkaConfigurationBuilder builder, ClusterSettings cluster) =>
        builder.WithActors((system, registry, resolver) =>
        {
            var loggers = resolver.GetService<ILoggerFactory>();
            var log = loggers.CreateLogger("Qcow2Actors.Host.Cluster");
            var settings = resolver.GetService<HostSettings>();
            var region = registry.Get<ImageEntity>();
            system.ActorOf(NodeAgent.Props(resolver.GetService<HostRegistry>(), region, cluster.Shards, settings.StopTimeout + TimeSpan.FromSeconds(30), log), NodeAgent.Name);
            system.ActorOf(DownedNodeFence.Props(cluster.ConnectionString, log, resolver.GetService<TimeProvider>()), "q2a-downed-node-fence");
            SbrTickerSetup.Start(system, cluster.SbrTickInterval, log);
            if (cluster.DownRefusedNodes) system.ActorOf(RefusedNodeDowning.Props(log, resolver.GetService<TimeProvider>()), "q2a-refused-node-downing");
        });
}
