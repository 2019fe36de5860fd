using System.CommandLine;
using System.Net.Sockets;
using Qcow2Actors.Host.Config;
using Qcow2Actors.Host.Hosting;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a host [--config FILE] [--control PATH] [--control-port N] [--port N | --socket PATH] --data-dir DIR</c>:
/// the multi-tenant storage daemon. Tenants, images, exports and limits are managed at run time through the
/// control API (<c>q2a ctl</c>); SIGTERM/SIGINT stop it (every image checkpointed and closed clean, exit 0),
/// SIGHUP reloads the config file's tenant quotas and limits.
/// </summary>
internal static class HostCommand
{
    public static Command Create()
    {
        var config = new Option<string?>("--config") { Description = "HOCON file (qcow2actors.host section; engine and akka keys too)" };
        var control = new Option<string?>("--control") { Description = "control API Unix socket (default: $Q2A_CONTROL, /run/q2a/control.sock as root, else $XDG_RUNTIME_DIR/q2a/control.sock)" };
        var controlPort = new Option<int?>("--control-port") { Description = "also serve the control API on TCP 127.0.0.1:N, TLS only (qcow2actors.host.control.tls in --config)" };
        var port = new Option<int?>("--port", "-p") { Description = "NBD TCP port (default 10809; 0 picks a free one)" };
        var socket = new Option<string?>("--socket", "-k") { Description = "serve NBD on this Unix socket instead of TCP" };
        var dataDir = new Option<string?>("--data-dir") { Description = "directory of the images (DIR/TENANT/NAME.qcow2) and host-state.json" };
        var cluster = new Option<bool>("--cluster") { Description = "join the cluster of qcow2actors.host.cluster (seed nodes, PostgreSQL journal; the data directory shared by every node)" };
        var command = new Command("host", "Run the multi-tenant storage daemon (NBD exports managed through the control API) until SIGTERM/SIGINT")
            { config, control, controlPort, port, socket, dataDir, cluster };

        // Synchronous on purpose, as serve: System.CommandLine gives an asynchronous action only a short grace
        // period after SIGTERM; the generic host handles the signals and closes every image before returning.
        command.SetAction(parse => CliRunner.RunAsync(async () =>
        {
            var settings = HostSettings.Load(parse.GetValue(config), parse.GetValue(dataDir), parse.GetValue(control),
                parse.GetValue(controlPort), parse.GetValue(port), parse.GetValue(socket));
            if (parse.GetValue(cluster) && settings.Cluster is null)
                settings = settings with { Cluster = Qcow2Actors.Host.Cluster.ClusterSettings.Read(settings.Config) };
            if (IgnoredSignals.Warning("host", IgnoredSignals.Inherited()) is { } warning) await Console.Error.WriteLineAsync(warning).ConfigureAwait(false);
            try
            {
                return await HostApplication.RunAsync(settings).ConfigureAwait(false);
            }
            catch (SocketException ex)
            {
                throw new InvalidOperationException($"cannot listen for NBD on {settings.NbdEndPoint}: {ex.Message}", ex);
            }
        }).GetAwaiter().GetResult());
        return command;
    }
}
