using System.Net;
using System.Runtime.InteropServices;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OpenTelemetry.Metrics;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Host.Auth;
using Qcow2Actors.Host.Config;
using Qcow2Actors.Host.Registry;
using Qcow2Actors.Hosting;

namespace Qcow2Actors.Host.Hosting;

/// <summary>
/// <c>q2a host</c> as a generic host: the engine through Akka.Hosting, the registry (tenants, images, NBD
/// exports), and the control API (ASP.NET Core minimal APIs on Kestrel) on a Unix socket and optionally
/// TCP 127.0.0.1, with its OpenAPI document and Prometheus metrics.
/// </summary>
public static class HostApplication
{
    /// <summary>The engine's meter, exported at /metrics beside the NBD server's and the host's.</summary>
    public const string EngineMeterName = "Qcow2Actors.Engine";

    /// <summary>
    /// Builds the host (nothing runs until it is started). The control socket must be free:
    /// a stale file is removed, a live one refuses.
    /// </summary>
    /// <exception cref="InvalidOperationException">Another host listens on the control socket.</exception>
    public static WebApplication Build(HostSettings settings, Action<ILoggingBuilder>? logging = null) => Build(settings, logging, services: null);

    /// <summary><see cref="Build(HostSettings, Action{ILoggingBuilder}?)"/> with a last say on the services (tests: a fake clock).</summary>
    internal static WebApplication Build(HostSettings settings, Action<ILoggingBuilder>? logging, Action<IServiceCollection>? services)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var auth = settings.Auth ?? ControlAuthSettings.Read(settings.Config, settings.DataDir, tcp: settings.ControlPort is not null);
        var tls = settings.ControlPort is null ? null : ControlTls.Options(auth);
        ControlListener.Prepare(settings.ControlSocket);
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [], ContentRootPath = AppContext.BaseDirectory });
        builder.Host.UseSystemd(); // Type=notify when systemd started us; nothing otherwise
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = settings.StopTimeout + TimeSpan.FromMinutes(5));

        builder.Logging.ClearProviders();
        if (settings.JsonLogs) builder.Logging.AddJsonConsole(o => o.UseUtcTimestamp = true);
        else builder.Logging.AddSimpleConsole(o => { o.SingleLine = true; o.UseUtcTimestamp = true; o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ "; });
        builder.Logging.SetMinimumLevel(LogLevel.Information);
        builder.Logging.AddFilter("Microsoft", LogLevel.Warning);
        builder.Logging.AddFilter("Microsoft.Hosting.Lifetime", LogLevel.Information);
        // A start-up failure (port in use, bad state file) is one line from q2a host, not a logged stack trace.
        builder.Logging.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", LogLevel.None);
        logging?.Invoke(builder.Logging);

        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.ListenUnixSocket(settings.ControlSocket);
            // TCP is TLS only: who calls is proved by a client certificate or a bearer token (ControlAuthentication).
            if (settings.ControlPort is { } port) kestrel.Listen(IPAddress.Loopback, port, listen => listen.UseHttps(tls!));
        });
        builder.Services.ConfigureHttpJsonOptions(o => HostJson.Configure(o.SerializerOptions));
        builder.Services.Configure<RouteHandlerOptions>(o => o.ThrowOnBadRequest = true);
        builder.Services.AddOpenApi(o => o.AddDocumentTransformer<BearerSchemeTransformer>());
        builder.Services.TryAddSingleton(TimeProvider.System);
        builder.Services.AddSingleton(auth);
        builder.Services.AddSingleton(sp => new AuditLog(auth.AuditLog, sp.GetRequiredService<TimeProvider>()));

        builder.Services.AddQcow2Actors(o =>
        {
            o.ActorSystemName = "q2a-host";
            // The registry closes the images in the service-unbind phase (RegistryService): give it the stop timeout and
            // a minute for the checkpoints rather than Akka's default 5 s per phase.
            var unbind = (long)(settings.StopTimeout + TimeSpan.FromMinutes(1)).TotalSeconds;
            // Cluster mode's journal and failure-detection settings go first, so the config file's own keys win.
            o.Hocon = (settings.Cluster is { } cluster ? cluster.Hocon() + "\n" : "")
                + (settings.ConfigFile is null ? "" : File.ReadAllText(settings.ConfigFile))
                + $"\nakka.coordinated-shutdown.phases.service-unbind.timeout = {unbind}s\n";
            if (settings.Cluster is { } clustered) o.ConfigureAkka = (akka, _) => Cluster.ClusterSetup.Configure(akka, clustered);
        });
        builder.Services.AddSingleton(settings);
        builder.Services.AddSingleton<HostRegistry>();
        builder.Services.AddSingleton<HostMetrics>();
        builder.Services.AddHostedService<RegistryService>();
        builder.Services.AddOpenTelemetry().WithMetrics(metrics => metrics
            .AddMeter(EngineMeterName, Nbd.Metrics.NbdMetrics.MeterName, HostMetrics.MeterName)
            .AddPrometheusExporter());

        services?.Invoke(builder.Services);

        var app = builder.Build();
        app.UseMiddleware<ApiErrors>();
        app.UseRouting(); // the authentication sees the endpoint (OperatorOnly) and the route of the audit line
        app.UseMiddleware<ControlAuthentication>();
        app.MapOpenApi();
        app.MapPrometheusScrapingEndpoint(Routes.Metrics).WithMetadata(OperatorOnly.Instance);
        // Every API route lives under one group whose filter confines tenant tokens to their tenant.
        var api = app.MapGroup("").AddEndpointFilter<TenantScopeFilter>();
        HealthEndpoints.Map(api);
        TenantEndpoints.Map(api);
        TokenEndpoints.Map(api);
        ImageEndpoints.Map(api);
        SnapshotEndpoints.Map(api);
        ExportEndpoints.Map(api);
        LimitEndpoints.Map(api);
        ClusterEndpoints.Map(api);
        app.Lifetime.ApplicationStarted.Register(() =>
        {
            ControlListener.Restrict(settings.ControlSocket);
            _ = app.Services.GetRequiredService<HostMetrics>(); // instruments exist from the start
            app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Qcow2Actors.Host")
                .LogInformation("control API on {Socket}{Tcp}; audit log {Audit}", settings.ControlSocket,
                    settings.ControlPort is { } p ? $" and https://127.0.0.1:{p}" : "", auth.AuditLog);
        });
        app.Lifetime.ApplicationStopped.Register(() =>
        {
            try { File.Delete(settings.ControlSocket); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        });
        return app;
    }

    /// <summary>
    /// Runs the host until SIGTERM/SIGINT (or <paramref name="stop"/>): the NBD server stops, every image is
    /// checkpointed and closed. SIGHUP reloads the config file's tenants (quotas, image limits, limits).
    /// Returns the exit status: 0 when every image closed clean, 1 otherwise.
    /// </summary>
    public static async Task<int> RunAsync(HostSettings settings, CancellationToken stop = default)
    {
        ArgumentNullException.ThrowIfNull(settings);
        // Owner-only files from the start: the control socket is bound with this mask (so it is never
        // connectable by others, even before Restrict), and tenants' images and journals are private.
        if (!OperatingSystem.IsWindows()) NativeUmask.Set(0b000_111_111);
        await using var app = Build(settings);
        var registry = app.Services.GetRequiredService<HostRegistry>();
        var log = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Qcow2Actors.Host");
        using var hangup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, context =>
        {
            context.Cancel = true; // a reload, not the end
            _ = ReloadAsync(settings, registry, log);
        });
        await app.RunAsync(stop);
        return registry.StoppedClean ? 0 : 1;
    }

    /// <summary>Re-reads the config file's tenants; a file that no longer parses is logged and changes nothing.</summary>
    internal static async Task ReloadAsync(HostSettings settings, HostRegistry registry, ILogger log)
    {
        try
        {
            var tenants = HostSettings.ReadTenants(HostSettings.ReadConfig(settings.ConfigFile));
            await registry.ReloadAsync(tenants);
        }
        catch (Exception ex) when (ex is ArgumentException or HostApiException)
        {
            log.LogError("configuration not reloaded: {Reason}", ex.Message);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            log.LogError(ex, "configuration reload failed");
        }
    }
}
