using System.CommandLine;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a commit [-f FMT] [-t CACHE] [-b BASE] [-d] [-p] [-q] IMG</c>, as qemu-img commit: every range
/// IMG's view holds above BASE (its backing file unless <c>-b</c> names one deeper in the chain)
/// is written into BASE through the write engine (zeros as zeros), BASE is flushed and closed, and
/// then IMG is emptied (<see cref="Qcow2Image.MakeEmptyAsync"/>: it reads from BASE again) unless
/// <c>-d</c>; <c>-b</c> implies <c>-d</c>, as in qemu-img, since the images between would read
/// differently. IMG reads the same at every step, so a crash leaves it as it was.
/// </summary>
internal static class CommitCommand
{
    private const int ChunkSize = 2 * 1024 * 1024;

    public static Command Create()
    {
        var format = new Option<string?>("-f") { Description = "format of IMG (qcow2)" };
        var cache = new Option<string?>("-t") { Description = "cache mode: none, writeback (default), writethrough, directsync, unsafe" };
        var baseOption = new Option<string?>("-b") { Description = "the image of IMG's backing chain to commit into (implies -d)" };
        var keep = new Option<bool>("-d") { Description = "do not empty IMG afterwards" };
        var progress = new Option<bool>("-p") { Description = "show progress" };
        var quiet = new Option<bool>("-q") { Description = "quiet: print nothing" };
        var image = new Argument<string[]>("filename") { Arity = ArgumentArity.ZeroOrMore };
        var command = new Command("commit", "Write an image's changes into its backing file")
            { format, cache, baseOption, keep, progress, quiet, image };
        command.SetAction((parse, ct) => CliRunner.RunAsync(async () =>
        {
            var files = parse.GetValue(image) ?? [];
            if (files.Length != 1) throw new CliException("Expecting one image file name");
            var cacheMode = CacheModes.Parse(parse.GetValue(cache)) ?? throw new CliException($"Invalid cache option: {parse.GetValue(cache)}");
            bool q = parse.GetValue(quiet);
            await RunAsync(files[0], parse.GetValue(format), parse.GetValue(baseOption), parse.GetValue(keep), cacheMode,
                parse.GetValue(progress) && !q, ct).ConfigureAwait(false);
            if (!q) Console.WriteLine("Image committed.");
            return 0;
        }));
        return command;
    }

    public static async Task RunAsync(string topPath, string? format, string? baseName, bool keep, CacheMode cache, bool progress, CancellationToken ct)
    {
        if (format is not null and not "qcow2") throw new CliException("Image does not have a backing file");
        if (!File.Exists(topPath)) throw new FileNotFoundException($"Could not open '{topPath}': No such file or directory", topPath);
        var hold = TestHold.FromEnvironment();
        // The top image is ours for the whole commit, as qemu-img holds it open for writing; its
        // chain is read with force-share so the base can be opened for writing beside it.
        var topLock = ImageLock.Acquire(topPath, LockMode.Writer);
        try
        {
            var chain = await BackingChain.ReadAsync(topPath, format, ct).ConfigureAwait(false);
            if (chain.Count == 0) throw new CliException("Image does not have a backing file");
            var target = baseName is null ? chain[0] : Find(chain, topPath, baseName)
                ?? throw new CliException($"Did not find '{baseName}' in the backing chain of '{topPath}'");
            keep |= baseName is not null;
            if (!keep)
            {
                await using var probe = await Qcow2Image.OpenAsync(topPath, new Qcow2OpenOptions { Format = format, ForceShare = true }, ct).ConfigureAwait(false);
                if (probe.Info.DataFile is not null)
                    throw new CliException($"'{topPath}' has an external data file: q2a cannot empty it (commit with -d)");
            }
            await using (var host = ImageHost.Create())
            {
                var top = await Qcow2Image.OpenAsync(topPath, new Qcow2OpenOptions { Format = format, ForceShare = true, Cache = cache }, ct).ConfigureAwait(false);
                await using (top.ConfigureAwait(false))
                {
                    var baseImage = await host.OpenAsync(target.Path, new Qcow2OpenOptions { ReadOnly = false, Format = target.Format, Cache = cache }, ct).ConfigureAwait(false);
                    await using (baseImage.ConfigureAwait(false))
                    {
                        // A shorter base grows to the top's size first, as QEMU's commit job does.
                        if (baseImage.VirtualSize < top.VirtualSize) await baseImage.ResizeAsync(top.VirtualSize, ct).ConfigureAwait(false);
                        var meter = progress ? new ConvertCommand.ProgressMeter(top.VirtualSize) : null;
                        meter?.Print(0);
                        await CopyAboveAsync(top, baseImage, target.Depth, meter, hold, ct).ConfigureAwait(false);
                        // Durable in the base before the top lets go of anything.
                        await baseImage.FlushAsync(ct).ConfigureAwait(false);
                        meter?.Finish();
                    }
                }
                if (!keep)
                {
                    topLock.Dispose();
                    var emptied = await host.OpenAsync(topPath, new Qcow2OpenOptions { ReadOnly = false, Format = format, Cache = cache }, ct).ConfigureAwait(false);
                    await using (emptied.ConfigureAwait(false))
                    {
                        await emptied.MakeEmptyAsync(ct).ConfigureAwait(false);
                        await hold.EndAsync().ConfigureAwait(false);
                        await emptied.FlushAsync(ct).ConfigureAwait(false);
                    }
                }
                else await hold.EndAsync().ConfigureAwait(false);
            }
        }
        finally
        {
            topLock.Dispose();
        }
    }

    /// <summary>
    /// The layer <paramref name="name"/> names: relative names are relative to the directory of the
    /// image above it (qemu-img's bdrv_find_backing_image), absolute ones compared as full paths.
    /// </summary>
    private static BackingChain.Layer? Find(List<BackingChain.Layer> chain, string topPath, string name)
    {
        string above = topPath;
        foreach (var layer in chain)
        {
            if (string.Equals(Path.GetFullPath(BackingChain.Resolve(above, name)), Path.GetFullPath(layer.Path), StringComparison.Ordinal)) return layer;
            above = layer.Path;
        }
        return null;
    }

    /// <summary>Writes every range of <paramref name="top"/>'s view that lies above depth <paramref name="depth"/> into <paramref name="target"/>.</summary>
    private static async Task CopyAboveAsync(Qcow2Image top, Qcow2Image target, int depth, ConvertCommand.ProgressMeter? meter, TestHold hold, CancellationToken ct)
    {
        var buffer = new byte[ChunkSize];
        var extents = new List<ImageExtent>();
        await foreach (var e in top.GetMapAsync(0, top.VirtualSize, ct).ConfigureAwait(false)) extents.Add(e);
        foreach (var extent in extents)
        {
            if (extent.Depth >= depth || !extent.Present) { meter?.Advance(extent.End); continue; }
            if (extent.Zero)
            {
                await target.WriteZeroesAsync(extent.Start, extent.Length, unmap: true, cancellationToken: ct).ConfigureAwait(false);
                await hold.WrittenAsync(extent.Length).ConfigureAwait(false);
                meter?.Advance(extent.End);
                continue;
            }
            for (long pos = extent.Start; pos < extent.End; pos += ChunkSize)
            {
                int n = (int)Math.Min(ChunkSize, extent.End - pos);
                await top.ReadAsync(pos, buffer.AsMemory(0, n), ct).ConfigureAwait(false);
                await target.WriteAsync(pos, buffer.AsMemory(0, n), cancellationToken: ct).ConfigureAwait(false);
                await hold.WrittenAsync(n).ConfigureAwait(false);
                meter?.Advance(pos + n);
            }
        }
    }
}
