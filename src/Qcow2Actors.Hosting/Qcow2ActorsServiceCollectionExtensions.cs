using Akka.Actor;
using Akka.Configuration;
using Akka.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Qcow2Actors.Engine;

namespace Qcow2Actors.Hosting;

/// <summary>
/// Registers the Qcow2Actors engine with a generic host (Microsoft.Extensions.Hosting) on
/// Akka.Hosting: the actor system starts and stops with the host, and an <see cref="ImageHost"/>
/// on that system is a singleton service that opens and creates images.
/// </summary>
public static class Qcow2ActorsServiceCollectionExtensions
{
    /// <summary>
    /// Adds an Akka.NET actor system (Akka.Hosting's <c>AddAkka</c>) configured for the engine, and
    /// <see cref="ImageHost"/> as a singleton on it. Images the application still has open when the
    /// host stops are closed cleanly during the actor system's coordinated shutdown; close them
    /// yourself first (their <c>DisposeAsync</c>) to see a failure to close.
    /// </summary>
    /// <example>
    /// <code>
    /// builder.Services.AddQcow2Actors(o => o.Hocon = "qcow2actors.engine.l2-cache-size = 256");
    /// // later, in a service: ImageHost images (injected); await using var image = await images.OpenAsync(path);
    /// </code>
    /// </example>
    public static IServiceCollection AddQcow2Actors(this IServiceCollection services, Action<Qcow2ActorsOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var options = new Qcow2ActorsOptions();
        configure?.Invoke(options);
        services.AddAkka(options.ActorSystemName, (builder, provider) =>
        {
            builder.WithQcow2Actors(options.Hocon);
            options.ConfigureAkka?.Invoke(builder, provider);
        });
        return services.AddQcow2ImageHost();
    }

    /// <summary>
    /// For an application that calls Akka.Hosting's <c>AddAkka</c> itself: adds the engine's reference
    /// configuration as a fallback and <paramref name="hocon"/>, when given, over everything set so far.
    /// Pair it with <see cref="AddQcow2ImageHost"/>.
    /// </summary>
    public static AkkaConfigurationBuilder WithQcow2Actors(this AkkaConfigurationBuilder builder, string? hocon = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.AddHocon(ImageHost.ReferenceConfig, HoconAddMode.Append);
        if (!string.IsNullOrWhiteSpace(hocon))
            builder.AddHocon(ConfigurationFactory.ParseString(hocon), HoconAddMode.Prepend);
        return builder;
    }

    /// <summary>
    /// Registers <see cref="ImageHost"/> as a singleton attached (<see cref="ImageHost.Attach"/>) to the
    /// <see cref="ActorSystem"/> Akka.Hosting registered; that system's configuration must include the
    /// engine's (<see cref="WithQcow2Actors"/>).
    /// </summary>
    public static IServiceCollection AddQcow2ImageHost(this IServiceCollection services)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.AddSingleton(provider => ImageHost.Attach(provider.GetRequiredService<ActorSystem>()));
        return services;
    }
}
