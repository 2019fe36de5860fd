using System.Globalization;
using Qcow2Actors.CrashLab.Materialize;
using Qcow2Actors.CrashLab.States;
using Qcow2Actors.Engine;
using Qcow2Actors.Nbd;
using Qcow2Actors.Nbd.Exports;

namespace Qcow2Actors.CrashLab.Check;

/// <summary>
/// Runs the user's checker against crash states: extracts the base snapshot once into a temporary work directory,
/// materialises each state (a qcow2 overlay over the base holding only the differing sectors; a raw file when the
/// checker asks for <c>{raw}</c>; an in-process read-only NBD export of the overlay for <c>{uri}</c>), runs the
/// checker, and removes the state again. At most <see cref="CrashCheckOptions.Jobs"/> states exist at once.
/// </summary>
public static class CrashChecker
{
    /// <summary>Checks <paramref name="states"/> of <paramref name="space"/>; <paramref name="progress"/> hears
    /// (checked, failed) after every state.</summary>
    /// <exception cref="CrashLabException">The base could not be built (image or snapshot missing or unreadable).</exception>
    public static async Task<CrashCheckReport> RunAsync(ImageHost host, CrashStateSpace space, IReadOnlyList<CrashState> states,
        CrashCheckOptions options, IProgress<(int Checked, int Failed)>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(host);
        ArgumentNullException.ThrowIfNull(space);
        ArgumentNullException.ThrowIfNull(states);
        ArgumentNullException.ThrowIfNull(options);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var command = options.Command;
        var wantUri = CheckerCommand.Uses(command, CheckerCommand.Uri);
        var wantImage = CheckerCommand.Uses(command, CheckerCommand.Image) || wantUri;
        var wantRaw = CheckerCommand.Uses(command, CheckerCommand.Raw);
        if (options.KeepFailedDirectory is { } keep)
            Directory.CreateDirectory(keep);

        var work = Directory.CreateTempSubdirectory("q2a-crash-").FullName;
        try
        {
            using var baseImage = await CrashBase.ExtractAsync(host, space.Log.Header, Path.Combine(work, "base.raw"), cancellationToken);
            var socket = Path.Combine(work, "nbd.sock");
            await using var server = wantUri ? new NbdServer(NbdServerOptions.Unix([], socket) with { AllowNoExports = true }) : null;
            if (server is not null)
                await server.StartAsync(cancellationToken);

            var failures = new CrashCheckFailure?[states.Count];
            var done = 0;
            var failed = 0;
            await Parallel.ForEachAsync(Enumerable.Range(0, states.Count),
                new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, options.Jobs), CancellationToken = cancellationToken },
                async (i, ct) =>
                {
                    var state = states[i];
                    var name = string.Create(CultureInfo.InvariantCulture, $"s{i}");
                    var delta = CrashStateDelta.Build(state, baseImage);
                    var overlay = wantImage ? Path.Combine(work, name + ".qcow2") : null;
                    var raw = wantRaw ? Path.Combine(work, name + ".raw") : null;
                    Qcow2Export? export = null;
                    try
                    {
                        if (overlay is not null)
                            await CrashStateWriter.WriteAsync(host, baseImage, delta, overlay, CrashStateImageFormat.Overlay, ct);
                        if (raw is not null)
                            await CrashStateWriter.WriteAsync(host, baseImage, delta, raw, CrashStateImageFormat.Raw, ct);
                        string? uri = null;
                        if (server is not null && overlay is not null)
                        {
                            var image = await host.OpenAsync(overlay, new Qcow2OpenOptions { ReadOnly = true }, ct);
                            export = new Qcow2Export(image, name, readOnly: true, ownsImage: true);
                            server.AddExport(export);
                            uri = $"nbd+unix:///{name}?socket={socket}";
                        }

                        var (exitCode, output) = await CheckerCommand.RunAsync(CheckerCommand.Expand(command, overlay, uri, raw),
                            work, options.Timeout, options.MaxOutput, ct);
                        if (exitCode != 0)
                        {
                            string? kept = null;
                            if (options.KeepFailedDirectory is { } dir)
                            {
                                kept = Path.Combine(dir, state.Id + ".qcow2");
                                if (!File.Exists(kept))
                                    await CrashStateWriter.WriteAsync(host, baseImage, delta, kept, CrashStateImageFormat.Standalone, ct);
                            }

                            failures[i] = new CrashCheckFailure(state, exitCode, output, kept);
                            Interlocked.Increment(ref failed);
                        }
                    }
                    finally
                    {
                        if (export is not null)
                        {
                            await server!.RemoveExportAsync(name, CancellationToken.None);
                            await export.DisposeAsync();
                        }

                        if (overlay is not null)
                            File.Delete(overlay);
                        if (raw is not null)
                            File.Delete(raw);
                    }

                    progress?.Report((Interlocked.Increment(ref done), Volatile.Read(ref failed)));
                });

            return new CrashCheckReport(states.Count, [.. failures.OfType<CrashCheckFailure>()], clock.Elapsed);
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }
}
