using System.CommandLine;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Qcow2Actors.CrashLab;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Format;
using Qcow2Actors.Nbd;
using Qcow2Actors.Nbd.Exports;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a serve [--bind ADDR] [--port N | --socket PATH] [--export-name NAME] [--read-only]
/// [--discard=ignore|unmap] [--cache=none|writeback] [--create SIZE] [-f FMT] [--config FILE]
/// [--tls-creds DIR [--tls off|optional|required] [--tls-authz SUBJECT]...] [--record LOG] [LIMITS] IMG...</c>
/// (LIMITS: --max-connections, --max-negotiating, --handshake-timeout, --idle-timeout, --max-in-flight-requests,
/// --max-in-flight-bytes): serves each
/// image as an NBD export named after its file, prints one <c>Serving URI</c> line per export,
/// and runs until SIGINT, SIGTERM or SIGHUP, which stop the server, flush and close every image.
/// An image fault (turned read-only, corrupt, out of space, not closed clean) is one stderr line
/// when it happens; the exit status is 0 only when every image was closed clean.
/// </summary>
internal static class ServeCommand
{
    public static Command Create()
    {
        var bind = new Option<string?>("--bind") { Description = $"address to listen on (default {IPAddress.Loopback})" };
        var port = new Option<int?>("--port", "-p") { Description = $"TCP port (default {NbdServerOptions.DefaultPort}; 0 picks a free one)" };
        var socket = new Option<string?>("--socket", "-k") { Description = "listen on this Unix domain socket instead of TCP" };
        var exportName = new Option<string?>("--export-name", "-x") { Description = "export name (only with one image; default: the file name)" };
        var readOnly = new Option<bool>("--read-only", "-r") { Description = "open the images read-only and export them read-only" };
        var discard = new Option<string?>("--discard") { Description = "what TRIM does: unmap (free the clusters; default) or ignore (keep them), as qemu-nbd" };
        var cache = new Option<string?>("--cache") { Description = "host page cache: writeback (default) or none (O_DIRECT; the filesystem must support it), as qemu-nbd" };
        var create = new Option<string?>("--create") { Description = "create missing images with this virtual size (qcow2 defaults; e.g. 10G)" };
        var format = new Option<string?>("-f", "--format") { Description = "image format (qcow2 or raw); probed when absent" };
        var config = new Option<string?>("--config") { Description = "HOCON file with q2a.serve settings and exports" };
        var tlsCreds = new Option<string?>("--tls-creds") { Description = "directory of x509 credentials as QEMU lays them out (ca-cert.pem, server-cert.pem, server-key.pem): offer TLS, clients need a certificate the CA signed" };
        var tls = new Option<string?>("--tls") { Description = "off, optional (plain text allowed) or required (the default with --tls-creds, as qemu-nbd)" };
        var tlsAuthz = new Option<string[]>("--tls-authz") { Description = "serve only clients whose certificate subject is this distinguished name (repeatable), as qemu's authz-simple", AllowMultipleArgumentsPerToken = false };
        var maxConnections = new Option<int?>("--max-connections", "--shared", "-e") { Description = "most connections at once, as qemu-nbd's --shared (default 0: half the descriptors free at start, 1..1024)" };
        var maxNegotiating = new Option<int?>("--max-negotiating") { Description = "most connections still negotiating at once (default 0: a quarter of max-connections, all of it up to 16)" };
        var handshakeTimeout = new Option<string?>("--handshake-timeout") { Description = "close clients that have not chosen an export by then (default 10s; 0: never)" };
        var idleTimeout = new Option<string?>("--idle-timeout") { Description = "close clients with no request in flight this long (default 0: never)" };
        var maxInFlightRequests = new Option<int?>("--max-in-flight-requests") { Description = "requests one connection may have unanswered at once (default 64)" };
        var maxInFlightBytes = new Option<string?>("--max-in-flight-bytes") { Description = "payload bytes one connection may hold, replies not yet read included (default 64M)" };
        var bitmap = new Option<string[]>("--bitmap", "-B") { Description = "offer this persistent dirty bitmap as the NBD context qemu:dirty-bitmap:NAME (repeatable; one image), as qemu-nbd", AllowMultipleArgumentsPerToken = false };
        var allocationDepth = new Option<bool>("--allocation-depth", "-A") { Description = "offer the NBD context qemu:allocation-depth (0 unallocated, 1 this image, N the (N-1)th backing file), as qemu-nbd" };
        var record = new Option<string?>("--record") { Description = "record every write, zero, trim, flush and FUA of the guest into this new crash-lab log, from an internal snapshot taken at start (one qcow2 image; for q2a crash)" };
        var images = new Argument<string[]>("filename") { Description = "images to serve", Arity = ArgumentArity.ZeroOrMore };
        var command = new Command("serve", "Serve images over NBD until SIGINT, SIGTERM or SIGHUP")
            {
                bind, port, socket, exportName, readOnly, discard, cache, create, format, config, bitmap, allocationDepth, record,
                tlsCreds, tls, tlsAuthz,
                maxConnections, maxNegotiating, handshakeTimeout, idleTimeout, maxInFlightRequests, maxInFlightBytes, images,
            };

        // A synchronous action on purpose: System.CommandLine gives an asynchronous action only a
        // short grace period after SIGTERM before it returns 143, cutting off the clean close.
        // This verb handles the signals itself and exits 0 once every image is closed.
        command.SetAction(parse => CliRunner.RunAsync(async () =>
        {
            var settings = ServeSettings.From(
                parse.GetValue(images) ?? [], parse.GetValue(bind), parse.GetValue(port), parse.GetValue(socket),
                parse.GetValue(exportName), parse.GetValue(readOnly), parse.GetValue(create), parse.GetValue(format),
                parse.GetValue(config), parse.GetValue(discard), parse.GetValue(cache),
                new ServeLimitOptions(parse.GetValue(maxConnections), parse.GetValue(maxNegotiating), parse.GetValue(handshakeTimeout),
                    parse.GetValue(idleTimeout), parse.GetValue(maxInFlightRequests), parse.GetValue(maxInFlightBytes)),
                parse.GetValue(bitmap), parse.GetValue(allocationDepth), parse.GetValue(record));
            settings = ServeTls.Apply(settings, parse.GetValue(tlsCreds), parse.GetValue(tls), parse.GetValue(tlsAuthz));
            using var signals = new ShutdownSignals();
            // The command line is valid and nothing is opened, locked or bound yet: restart once on JIT-compiled
            // code (OptimizedRestart says why); the restarted process parses the same command line again.
            if (OptimizedRestart.Restart(Console.Error, signals.Stopping) == OptimizedRestart.Outcome.StopRequested) return 0;
            if (IgnoredSignals.Warning("serve", IgnoredSignals.Inherited()) is { } warning) await Console.Error.WriteLineAsync(warning).ConfigureAwait(false);
            return await RunAsync(settings, Console.Out, Console.Error, signals.Stopping,
                warmUp: ServeWarmUp.Wanted(Environment.GetEnvironmentVariable)).ConfigureAwait(false);
        }).GetAwaiter().GetResult());
        return command;
    }

    /// <summary>
    /// Opens (creating where asked) every image, serves them until <paramref name="stop"/> completes,
    /// then stops the server, flushes and closes the images. Each image fault is one line on
    /// <paramref name="stderr"/> as it happens. Returns the exit code: 0 when every image was
    /// closed clean, 1 when any turned read-only, was found corrupt or failed to close.
    /// With <paramref name="warmUp"/>, the request path is run once first (<see cref="ServeWarmUp"/>), before the images
    /// are opened and the server listens.
    /// </summary>
    public static async Task<int> RunAsync(ServeSettings settings, TextWriter stdout, TextWriter stderr, Task stop, bool warmUp = false)
    {
        stderr = TextWriter.Synchronized(stderr);
        var faults = new ServeFaults(stderr);
        // One actor system for every image; a failure in one image's actors stops that image only.
        // Disposed last, after the finally below has closed every image.
        await using var host = ImageHost.Create(settings.FileConfig, "q2a-serve");
        if (warmUp)
        {
            await WarmUpAsync(host, settings, stderr, stop).ConfigureAwait(false);
            // Stopped while warming up: nothing of the user's was opened, and nothing listens.
            if (stop.IsCompleted) return 0;
        }
        var exports = new List<INbdExport>();
        using var logs = new StderrLoggerFactory(stderr, "q2a serve");
        NbdServer? server = null;
        int exit = 0;
        try
        {
            foreach (var spec in settings.Exports)
                exports.Add(await OpenAsync(host, spec, faults.For(spec.Path), settings.DeviceFactory).ConfigureAwait(false));
            server = new NbdServer(new NbdServerOptions
            {
                Exports = exports,
                EndPoint = settings.EndPoint,
                HandshakeTimeout = settings.HandshakeTimeout,
                MaxConnections = settings.MaxConnections,
                TlsMode = settings.TlsMode,
                TlsCredentials = settings.TlsCredentials,
                Authorize = ServeTls.Authorize(settings.TlsAuthz),
                MaxNegotiatingConnections = settings.MaxNegotiating,
                IdleTimeout = settings.IdleTimeout,
                MaxInFlightRequests = settings.MaxInFlightRequests,
                MaxInFlightBytes = settings.MaxInFlightBytes,
                LoggerFactory = logs,
            });
            await server.StartAsync().ConfigureAwait(false);
            foreach (var export in exports)
            {
                if (export is RecordingExport recording)
                    await stdout.WriteLineAsync($"Recording '{export.Name}' into {recording.LogPath} from snapshot {recording.BaseSnapshot}").ConfigureAwait(false);
                await stdout.WriteLineAsync($"Serving {server.GetUri(export.Name)}").ConfigureAwait(false);
            }
            await stdout.FlushAsync().ConfigureAwait(false);

            await stop.ConfigureAwait(false);
        }
        finally
        {
            if (server is not null)
            {
                // Let requests already read finish; a client that will not let go is cut off.
                await server.StopAsync(settings.StopTimeout).ConfigureAwait(false);
                await server.DisposeAsync().ConfigureAwait(false);
            }
            for (int i = 0; i < exports.Count; i++)
            {
                if (!await CloseAsync(exports[i], settings.Exports[i].Path, faults, stderr).ConfigureAwait(false)) exit = 1;
            }
        }
        return exit;
    }

    /// <summary>Runs <see cref="ServeWarmUp"/> like the first export (its cache mode); a stop cuts it short.</summary>
    private static async Task WarmUpAsync(ImageHost host, ServeSettings settings, TextWriter stderr, Task stop)
    {
        using var cancel = new CancellationTokenSource();
        var cache = settings.Exports.Count > 0 ? settings.Exports[0].Cache : CacheMode.Writeback;
        Task warming = ServeWarmUp.RunAsync(host, cache, stderr, cancel.Token);
        if (await Task.WhenAny(warming, stop).ConfigureAwait(false) != warming) await cancel.CancelAsync().ConfigureAwait(false);
        await warming.ConfigureAwait(false);
    }

    /// <summary>Flushes and closes one export; true when its image ended clean (the journal gone, the header clean).</summary>
    private static async Task<bool> CloseAsync(INbdExport export, string path, ServeFaults faults, TextWriter stderr)
    {
        bool clean = true;
        try
        {
            // An image that turned read-only cannot flush; its journal keeps what was acknowledged. A recording's
            // image is flushed past the recorder: this flush is the server's, not the guest's.
            var target = export is RecordingExport recording ? recording.Inner : export;
            if (!export.IsReadOnly && !faults.TurnedReadOnly(path)) await target.FlushAsync(CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // A flush failing here turns the image read-only, which the engine has reported already.
            if (!faults.TurnedReadOnly(path))
                await stderr.WriteLineAsync($"q2a serve: flushing '{path}' failed: {ex.Message.ReplaceLineEndings(" ")}").ConfigureAwait(false);
            clean = false;
        }
        try
        {
            // A clean close: checkpoint, journal truncated, header bits cleared (a recording's log is closed first).
            // Close the others anyway when this one fails: the journal makes the next open recover it.
            if (export is IAsyncDisposable async) await async.DisposeAsync().ConfigureAwait(false);
            else (export as IDisposable)?.Dispose();
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            if (!faults.ClosedUnclean(path))
                await stderr.WriteLineAsync($"q2a serve: closing '{path}' failed: {ex.Message.ReplaceLineEndings(" ")}").ConfigureAwait(false);
            clean = false;
        }
        return clean && !faults.Unclean(path);
    }

    private static async Task<INbdExport> OpenAsync(ImageHost host, ExportSpec spec, Action<Qcow2ImageFault> onFault,
        Func<string, bool, Engine.Device.IBlockDevice>? deviceFactory)
    {
        if (spec.CreateSize is { } size && !File.Exists(spec.Path))
        {
            if (spec.Format is null or "qcow2") ImageCreator.Create(spec.Path, new Qcow2CreateOptions { Size = size });
            else
            {
                using var created = File.OpenHandle(spec.Path, FileMode.CreateNew, FileAccess.Write);
                RandomAccess.SetLength(created, size);
            }
        }
        // Before the image is opened: a recording never overwrites a log, and needs a qcow2 image's snapshot.
        if (spec.Record is { } log)
        {
            RecordingExport.RefuseExisting(Path.GetFullPath(log));
            if (IsRaw(spec))
                throw new ArgumentException($"--record cannot record '{spec.Path}': a raw image has no internal snapshot to start from (convert it to qcow2)");
        }
        // The write engine drives qcow2; a raw image is served as the plain file it is.
        if (!spec.ReadOnly && IsRaw(spec))
        {
            // A raw file has no bitmaps: the first one asked for is missing, as qemu-nbd says.
            if (spec.Bitmaps is [var missing, ..]) throw new ArgumentException($"Bitmap '{missing}' is not found");
            return RawFileExport.Open(spec.Path, spec.Name, cache: spec.Cache, allocationDepth: spec.AllocationDepth);
        }
        var image = await host.OpenAsync(spec.Path,
            new Qcow2OpenOptions { ReadOnly = spec.ReadOnly, Format = spec.Format, OnFault = onFault, DeviceFactory = deviceFactory, Cache = spec.Cache })
            .ConfigureAwait(false);
        Qcow2Export export;
        try
        {
#pragma warning disable CA2000 // returned to the caller, or closed below when the recording cannot start
            export = new Qcow2Export(image, spec.Name, spec.ReadOnly, ownsImage: true, discard: spec.Discard)
            {
                AllocationDepth = spec.AllocationDepth,
                DirtyBitmaps = spec.Bitmaps ?? [],
            };
#pragma warning restore CA2000
        }
        catch
        {
            // A bitmap the image does not have (or cannot export): close what was opened, then say which.
            await image.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        if (spec.Record is null) return export;
        try
        {
            // The base snapshot is taken here, before the server starts: no guest request can come first.
            return await RecordingExport.StartAsync(export, spec.Record, ownsInner: true).ConfigureAwait(false);
        }
        catch
        {
            await export.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private static bool IsRaw(ExportSpec spec)
    {
        if (spec.Format is not null) return spec.Format == "raw";
        if (!File.Exists(spec.Path)) return false; // let the open say it is missing
        return !FormatProbe.IsQcow2(spec.Path);
    }

    /// <summary>
    /// The first SIGINT, SIGTERM or SIGHUP (a closed terminal or SSH session) completes
    /// <see cref="Stopping"/> and keeps the process alive for the clean close; a second one
    /// terminates the process at once, as usual.
    /// </summary>
    private sealed class ShutdownSignals : IDisposable
    {
        private readonly TaskCompletionSource _stopping = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly PosixSignalRegistration _sigint;
        private readonly PosixSignalRegistration _sigterm;
        private readonly PosixSignalRegistration _sighup;

        public ShutdownSignals()
        {
            _sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Handle);
            _sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Handle);
            _sighup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, Handle);
        }

        public Task Stopping => _stopping.Task;

        private void Handle(PosixSignalContext context) => context.Cancel = _stopping.TrySetResult();

        public void Dispose()
        {
            _sigint.Dispose();
            _sigterm.Dispose();
            _sighup.Dispose();
        }
    }
}
