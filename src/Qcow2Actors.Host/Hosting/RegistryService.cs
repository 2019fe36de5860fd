using Akka;
using Akka.Actor;
using Akka.Hosting;
using Microsoft.Extensions.Hosting;
using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Hosting;

/// <summary>
/// Starts the registry (state, NBD server, images) once the actor system runs, and stops it (NBD server
/// stopped, every image checkpointed and closed) before the engine's own shutdown: as a hosted service and as
/// a task of the actor system's coordinated shutdown in the <c>service-unbind</c> phase, so whichever of the two
/// runs first (Akka.Hosting may start the coordinated shutdown when the application begins stopping), the
/// registry closes its images itself, ahead of the engine's <c>service-stop</c> phase.
/// </summary>
internal sealed class RegistryService(HostRegistry registry, ActorSystem system, Microsoft.Extensions.Logging.ILoggerFactory loggers,
    IHostApplicationLifetime lifetime) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (registry.Settings.Cluster is { } cluster)
        {
            system.ActorOf(Cluster.ClusterEventLog.Props(loggers.CreateLogger("Qcow2Actors.Host.Cluster")), "q2a-cluster-events");
            await Cluster.ClusterSetup.WarmUpJournalsAsync(system, cluster, cancellationToken);
            var watch = new Cluster.Forwarding.OwnerWatch();
            system.ActorOf(Cluster.Forwarding.OwnerWatch.Props(watch), "q2a-owner-watch");
#pragma warning disable CA2000 // the store (one PostgreSQL data source) lives as long as the host process
            registry.AttachCluster(new HostRegistry.ClusterLinks(system, ActorRegistry.For(system).Get<Cluster.ImageEntity>(), watch,
                new Cluster.Forwarding.IncarnationStore(cluster.ConnectionString), new Cluster.Forwarding.ForwardingOptions()));
#pragma warning restore CA2000
            // A drained node (it left the cluster) ends when its actor system does: the host stops, exit 0 when clean.
            _ = system.WhenTerminated.ContinueWith(_ => lifetime.StopApplication(), TaskScheduler.Default);
        }
        await registry.StartAsync(cancellationToken);
        if (registry.Settings.Cluster is not null)
        {
            // Every cluster image is exported on this node too, forwarding to its owner.
            system.ActorOf(Cluster.Forwarding.ImageCatalog.Subscriber((export, size) =>
            {
                var (tenant, image) = Cluster.ImageEntity.Split(export);
                registry.AddClusterExport(tenant, image, size);
            }), "q2a-image-catalog");
        }
        CoordinatedShutdown.Get(system).AddTask(CoordinatedShutdown.PhaseServiceUnbind, "q2a-host-registry-stop", async () =>
        {
            await registry.StopAsync(CancellationToken.None);
            return Done.Instance;
        });
    }

    public Task StopAsync(CancellationToken cancellationToken) => registry.StopAsync(cancellationToken);
}
