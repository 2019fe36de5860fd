using System.CommandLine;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a commit [-f FMT] [-t CACHE] [-b BASE] [-r RATE] [-d] [-p] [-q] IMG</c>, as qemu-img commit: every range
/// IMG's view holds above BASE (its backing file unless <c>-b</c> names one deeper in the chain)
/// is written into BASE through the write engine (zeros as zeros; a raw BASE directly, under its
/// write lock), BASE is flushed and closed, and
/// then IMG is emptied (<see cref="Qcow2Image.MakeEmptyAsync"/>: it reads from BASE again) unless
/// <c>-d</c>; <c>-b</c> implies <c>-d</c>, as in qemu-img, since the images between would read
/// differently. IMG reads the same at every step, so a crash leaves it as it was. IMG is held
/// open for writing (QEMU's write lock) through one open from start to end.
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
        var rate = new Option<string?>("-r") { Description = "rate limit in bytes per second (suffixes k, M, G...; 0: none)" };
        var quiet = new Option<bool>("-q") { Description = "quiet: print nothing" };
        var image = new Argument<string[]>("filename") { Arity = ArgumentArity.ZeroOrMore };
        var command = new Command("commit", "Write an image's changes into its backing file")
            { format, cache, baseOption, keep, progress, rate, quiet, image };
        var sources = Sources.SourceOptions.AddTo(command);
        command.SetAction((parse, ct) => CliRunner.RunAsync(async () =>
        {
            var files = parse.GetValue(image) ?? [];
            if (files.Length != 1) throw new CliException("Expecting one image file name");
            var cacheMode = CacheModes.ParseOrRefuse(parse.GetValue(cache), source: false);
            long rateLimit = parse.GetValue(rate) is { } r ? ConvertRequest.ParseRateLimit(r) : 0;
            bool q = parse.GetValue(quiet);
            var spec = sources.ResolveHostFile(parse, files[0], parse.GetValue(format), "commit");
            await RunAsync(spec.Path!, spec.Format, parse.GetValue(baseOption), parse.GetValue(keep), cacheMode,
                parse.GetValue(progress) && !q, ct, rateLimit).ConfigureAwait(false);
            if (!q) Console.WriteLine("Image committed.");
            return 0;
        }));
        return command;
    }

    public static async Task RunAsync(string topPath, string? format, string? baseName, bool keep, CacheMode cache, bool progress, CancellationToken ct,
        long rateLimit = 0)
    {
        var rate = new RateLimit(rateLimit);
        if (format is not null and not "qcow2") throw new CliException("Image does not have a backing file");
        if (!File.Exists(topPath)) throw new FileNotFoundException($"Could not open '{topPath}': No such file or directory", topPath);
        var hold = TestHold.FromEnvironment();
        await using var host = ImageHost.Create();
        // The top is open for writing from here to the end, through this one open: it is read
        // through it and emptied through it, so no other process can write it in between (whose
        // writes the emptying would discard uncommitted). Its chain is shared so the base can be
        // opened for writing beside it.
        var top = await host.OpenAsync(topPath, new Qcow2OpenOptions
            { ReadOnly = false, Format = format, Cache = cache, ShareBackingChain = true }, ct).ConfigureAwait(false);
        await using (top.ConfigureAwait(false))
        {
            var chain = await BackingChain.ReadAsync(topPath, format, ct).ConfigureAwait(false);
            if (chain.Count == 0) throw new CliException("Image does not have a backing file");
            var target = baseName is null ? chain[0] : Find(chain, topPath, baseName)
                ?? throw new CliException($"Did not find '{baseName}' in the backing chain of '{topPath}'");
            keep |= baseName is not null;
            if (!keep && top.Info.DataFile is not null)
                throw new CliException($"'{topPath}' has an external data file: q2a cannot empty it (commit with -d)");
            var meter = progress ? new ProgressMeter(top.VirtualSize) : null;
            meter?.Print(0);
            if (await FormatOfAsync(target, ct).ConfigureAwait(false) == "raw")
                await CommitIntoRawAsync(top, target, meter, hold, rate, ct).ConfigureAwait(false);
            else
            {
                var baseImage = await host.OpenAsync(target.Path, new Qcow2OpenOptions { ReadOnly = false, Format = target.Format, Cache = cache }, ct).ConfigureAwait(false);
                await using (baseImage.ConfigureAwait(false))
                {
                    // A shorter base grows to the top's size first, as QEMU's commit job does.
                    if (baseImage.VirtualSize < top.VirtualSize) await baseImage.ResizeAsync(top.VirtualSize, ct).ConfigureAwait(false);
                    await CopyAboveAsync(top, target.Depth, meter, hold, rate,
                        (pos, data) => baseImage.WriteAsync(pos, data, cancellationToken: ct),
                        (pos, length) => baseImage.WriteZeroesAsync(pos, length, unmap: true, cancellationToken: ct), ct).ConfigureAwait(false);
                    // Durable in the base before the top lets go of anything.
                    await baseImage.FlushAsync(ct).ConfigureAwait(false);
                }
            }
            meter?.Finish();
            await hold.AtAsync("committed").ConfigureAwait(false);
            if (!keep)
            {
                await top.MakeEmptyAsync(ct).ConfigureAwait(false);
                await hold.EndAsync().ConfigureAwait(false);
                await top.FlushAsync(ct).ConfigureAwait(false);
            }
            else await hold.EndAsync().ConfigureAwait(false);
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

    /// <summary>The format <paramref name="layer"/> is opened with: its backing format, else probed as qemu-img does.</summary>
    private static async Task<string> FormatOfAsync(BackingChain.Layer layer, CancellationToken ct)
    {
        if (layer.Format is { } format) return format;
        await using var probe = await Qcow2Image.OpenAsync(layer.Path, new Qcow2OpenOptions { ForceShare = true }, ct).ConfigureAwait(false);
        return probe.Info.Format;
    }

    /// <summary>
    /// Commits into a raw base: the file is held with QEMU's write lock, grown to the top's size if
    /// shorter, written at the guest offsets (zeros as zero bytes) and flushed before the top is emptied.
    /// </summary>
    private static async Task CommitIntoRawAsync(Qcow2Image top, BackingChain.Layer target, ProgressMeter? meter, TestHold hold, RateLimit rate,
        CancellationToken ct)
    {
        using var rawLock = ImageLock.Acquire(target.Path, LockMode.Writer);
        using var file = File.OpenHandle(target.Path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        if (RandomAccess.GetLength(file) < top.VirtualSize) RandomAccess.SetLength(file, top.VirtualSize);
        var zeros = new byte[ChunkSize];
        await CopyAboveAsync(top, target.Depth, meter, hold, rate,
            (pos, data) => RandomAccess.WriteAsync(file, data, pos, ct),
            async (pos, length) =>
            {
                for (long end = pos + length; pos < end; pos += ChunkSize)
                    await RandomAccess.WriteAsync(file, zeros.AsMemory(0, (int)Math.Min(ChunkSize, end - pos)), pos, ct).ConfigureAwait(false);
            }, ct).ConfigureAwait(false);
        RandomAccess.FlushToDisk(file);
    }

    /// <summary>
    /// Writes every range of <paramref name="top"/>'s view that lies above depth <paramref name="depth"/>
    /// through <paramref name="write"/> (data) and <paramref name="writeZeroes"/> (zero ranges).
    /// </summary>
    private static async Task CopyAboveAsync(Qcow2Image top, int depth, ProgressMeter? meter, TestHold hold, RateLimit rate,
        Func<long, ReadOnlyMemory<byte>, ValueTask> write, Func<long, long, ValueTask> writeZeroes, CancellationToken ct)
    {
        var buffer = new byte[ChunkSize];
        var extents = new List<ImageExtent>();
        await foreach (var e in top.GetMapAsync(0, top.VirtualSize, ct).ConfigureAwait(false)) extents.Add(e);
        foreach (var extent in extents)
        {
            if (extent.Depth >= depth || !extent.Present) { meter?.Advance(extent.End); continue; }
            if (extent.Zero)
            {
                await rate.WaitAsync(extent.Length, ct).ConfigureAwait(false);
                await writeZeroes(extent.Start, extent.Length).ConfigureAwait(false);
                await hold.WrittenAsync(extent.Length).ConfigureAwait(false);
                meter?.Advance(extent.End);
                continue;
            }
            for (long pos = extent.Start; pos < extent.End; pos += ChunkSize)
            {
                int n = (int)Math.Min(ChunkSize, extent.End - pos);
                await rate.WaitAsync(n, ct).ConfigureAwait(false);
                await top.ReadAsync(pos, buffer.AsMemory(0, n), ct).ConfigureAwait(false);
                await write(pos, buffer.AsMemory(0, n)).ConfigureAwait(false);
                await hold.WrittenAsync(n).ConfigureAwait(false);
                meter?.Advance(pos + n);
            }
        }
    }
}
