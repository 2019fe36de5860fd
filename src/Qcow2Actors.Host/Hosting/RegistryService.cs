using Akka;
using Akka.Actor;
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
internal sealed class RegistryService(HostRegistry registry, ActorSystem system, Microsoft.Extensions.Logging.ILoggerFactory loggers) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (registry.Settings.Cluster is { } cluster)
        {
            system.ActorOf(Cluster.ClusterEventLog.Props(loggers.CreateLogger("Qcow2Actors.Host.Cluster")), "q2a-cluster-events");
            await Cluster.ClusterSetup.WarmUpJournalsAsync(system, cluster, cancellationToken);
        }
        await registry.StartAsync(cancellationToken);
        CoordinatedShutdown.Get(system).AddTask(CoordinatedShutdown.PhaseServiceUnbind, "q2a-host-registry-stop", async () =>
        {
            await registry.StopAsync(CancellationToken.None);
            return Done.Instance;
        });
    }

    public Task StopAsync(CancellationToken cancellationToken) => registry.StopAsync(cancellationToken);
}
