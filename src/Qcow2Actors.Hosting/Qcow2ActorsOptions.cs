using Akka.Hosting;

namespace Qcow2Actors.Hosting;

/// <summary>How <see cref="Qcow2ActorsServiceCollectionExtensions.AddQcow2Actors"/> sets up the engine.</summary>
public sealed class Qcow2ActorsOptions
{
    /// <summary>Name of the actor system the images run in.</summary>
    public string ActorSystemName { get; set; } = "qcow2actors";

    /// <summary>
    /// HOCON laid over the engine's reference configuration (<c>hocon/reference.conf</c>): any
    /// <c>qcow2actors.*</c> or <c>akka.*</c> key, e.g. <c>qcow2actors.engine.l2-cache-size = 256</c>.
    /// </summary>
    public string? Hocon { get; set; }

    /// <summary>
    /// More Akka.Hosting set-up for the same actor system (loggers, other plugins, your own actors),
    /// run after the engine's configuration was added.
    /// </summary>
    public Action<AkkaConfigurationBuilder, IServiceProvider>? ConfigureAkka { get; set; }
}
