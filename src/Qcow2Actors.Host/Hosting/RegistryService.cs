using Microsoft.Extensions.Hosting;
using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Hosting;

/// <summary>Starts the registry (state, NBD server, images) after the actor system and stops it (every image closed) before the actor system stops.</summary>
internal sealed class RegistryService(HostRegistry registry) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken) => registry.StartAsync(cancellationToken);

    public Task StopAsync(CancellationToken cancellationToken) => registry.StopAsync(cancellationToken);
}
