using System.CommandLine;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a compare [-f FMT] [-F FMT] [-T SRC_CACHE] [-p] [-q] [-s] [-U] A B</c>: qemu-img compare's messages and exit codes —
/// 0 "Images are identical.", 1 "Content mismatch at offset N!" (N the first differing byte
/// rounded down to its 512-byte sector), 2 on any error. Images of different sizes are equal
/// when the longer one's extra part reads as zeros. With <c>-s</c> (strict) a size difference, or
/// any difference in block status (allocation, zero, data) where the contents agree, is a mismatch.
/// </summary>
internal static class CompareCommand
{
    private const int ChunkSize = 1024 * 1024;
    private const int Sector = 512;

    public static Command Create()
    {
        var formatA = new Option<string?>("-f") { Description = "format of the first image; probed when absent" };
        var formatB = new Option<string?>("-F") { Description = "format of the second image; probed when absent" };
        var quiet = new Option<bool>("-q") { Description = "print nothing, only set the exit code" };
        var strict = new Option<bool>("-s") { Description = "strict: images of different sizes, or with different allocation where the contents agree, differ" };
        var forceShare = ForceShareOption.Create();
        var progress = new Option<bool>("-p") { Description = "show progress" };
        var sourceCache = new Option<string?>("-T") { Description = "cache mode of both images: none, writeback (default), writethrough, directsync, unsafe" };
        var a = new Argument<string>("filename1");
        var b = new Argument<string>("filename2");
        var command = new Command("compare", "Check whether two images have the same guest content") { formatA, formatB, quiet, strict, forceShare, progress, sourceCache, a, b };
        var sources = Sources.SourceOptions.AddTo(command);
        command.SetAction(async (parse, ct) =>
        {
            try
            {
                var cache = CacheModes.ParseOrRefuse(parse.GetValue(sourceCache), source: true);
                bool quietly = parse.GetValue(quiet);
                return await RunAsync(sources.Resolve(parse, parse.GetValue(a)!, parse.GetValue(formatA)), sources.Resolve(parse, parse.GetValue(b)!, parse.GetValue(formatB)),
                    quietly ? TextWriter.Null : Console.Out, ct, parse.GetValue(forceShare), parse.GetValue(strict),
                    parse.GetValue(progress) && !quietly, cache).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                // Errors are exit 2 for compare (1 means "different"); CliRunner prints the one line.
                await CliRunner.RunAsync(() => Task.FromException<int>(ex)).ConfigureAwait(false);
                return 2;
            }
        });
        return command;
    }

    public static Task<int> RunAsync(string pathA, string pathB, string? formatA, string? formatB, TextWriter stdout, CancellationToken ct,
        bool forceShare = false, bool strict = false, bool progress = false, CacheMode cache = CacheMode.Writeback) =>
        RunAsync(Sources.ImageSpec.Resolve(pathA, false, formatA, Sources.SourceObjects.Empty),
            Sources.ImageSpec.Resolve(pathB, false, formatB, Sources.SourceObjects.Empty), stdout, ct, forceShare, strict, progress, cache);

    public static async Task<int> RunAsync(Sources.ImageSpec specA, Sources.ImageSpec specB, TextWriter stdout, CancellationToken ct,
        bool forceShare = false, bool strict = false, bool progress = false, CacheMode cache = CacheMode.Writeback)
    {
        await using var imgA = await Sources.ImageSources.OpenReadOnlyAsync(specA, forceShare, snapshot: null, ct, cache).ConfigureAwait(false);
        await using var imgB = await Sources.ImageSources.OpenReadOnlyAsync(specB, forceShare, snapshot: null, ct, cache).ConfigureAwait(false);
        // qemu-img compare -p: the progress line over the larger image, the result after it, then a newline.
        var meter = progress ? new ProgressMeter(Math.Max(imgA.VirtualSize, imgB.VirtualSize), minSkip: 2f, output: stdout) : null;
        meter?.Print(0);
        int result = await CompareAsync(imgA, imgB, stdout, strict, meter, ct).ConfigureAwait(false);
        if (meter is not null) await stdout.WriteLineAsync().ConfigureAwait(false);
        return result;
    }

    // qemu-img compare's steps: where both read as zeros or neither allocates, the whole run at once;
    // otherwise at most 2 MiB at a time; each adds its share of the larger image.
    private static void Steps(ProgressMeter meter, ImageExtent a, ImageExtent b, long start, long end, long progressBase)
    {
        const long Buffer = 2 * 1024 * 1024;
        bool whole = (a.Zero && b.Zero) || (!a.Present && !b.Present);
        for (long pos = start; pos < end;)
        {
            long chunk = whole ? end - pos : Math.Min(Buffer, end - pos);
            meter.Add((float)chunk / progressBase * 100);
            pos += chunk;
        }
    }

    private static async Task<int> CompareAsync(Qcow2Image imgA, Qcow2Image imgB, TextWriter stdout, bool strict, ProgressMeter? meter,
        CancellationToken ct)
    {
        if (strict && imgA.VirtualSize != imgB.VirtualSize)
        {
            await stdout.WriteLineAsync("Strict mode: Image size mismatch!").ConfigureAwait(false);
            return 1;
        }
        long common = Math.Min(imgA.VirtualSize, imgB.VirtualSize);
        // QEMU's qcow2 block status stops at the end of each L2 table's range; strict mode compares
        // status pieces, whose end-of-image flag depends on those stops.
        long spanA = L2Span(imgA), spanB = L2Span(imgB);
        var bufA = new byte[ChunkSize];
        var bufB = new byte[ChunkSize];

        await using (var mapA = imgA.GetMapAsync(0, common, ct).GetAsyncEnumerator(ct))
        await using (var mapB = imgB.GetMapAsync(0, common, ct).GetAsyncEnumerator(ct))
        {
            ImageExtent? ea = null, eb = null;
            long pos = 0;
            while (pos < common)
            {
                if (ea is null || ea.End <= pos) { await mapA.MoveNextAsync().ConfigureAwait(false); ea = mapA.Current; }
                if (eb is null || eb.End <= pos) { await mapB.MoveNextAsync().ConfigureAwait(false); eb = mapB.Current; }
                long end = Math.Min(ea.End, eb.End);
                if (strict)
                {
                    long pieceA = Math.Min(ea.End, NextBoundary(pos, spanA)), pieceB = Math.Min(eb.End, NextBoundary(pos, spanB));
                    if (Status(ea, pieceA == imgA.VirtualSize) != Status(eb, pieceB == imgB.VirtualSize))
                    {
                        await stdout.WriteLineAsync($"Strict mode: Offset {pos} block status mismatch!").ConfigureAwait(false);
                        return 1;
                    }
                    end = Math.Min(pieceA, pieceB);
                }
                if (!(ea.Zero && eb.Zero))
                {
                    for (long p = pos; p < end; p += ChunkSize)
                    {
                        int n = (int)Math.Min(ChunkSize, end - p);
                        await imgA.ReadAsync(p, bufA.AsMemory(0, n), ct).ConfigureAwait(false);
                        await imgB.ReadAsync(p, bufB.AsMemory(0, n), ct).ConfigureAwait(false);
                        int diff = bufA.AsSpan(0, n).CommonPrefixLength(bufB.AsSpan(0, n));
                        if (diff < n) return await MismatchAsync(stdout, p + diff).ConfigureAwait(false);
                    }
                }
                if (meter is not null) Steps(meter, ea, eb, pos, end, Math.Max(imgA.VirtualSize, imgB.VirtualSize));
                pos = end;
            }
        }

        if (imgA.VirtualSize != imgB.VirtualSize)
        {
            await stdout.WriteLineAsync("Warning: Image size mismatch!").ConfigureAwait(false);
            var over = imgA.VirtualSize > imgB.VirtualSize ? imgA : imgB;
            await foreach (var e in over.GetMapAsync(common, over.VirtualSize - common, ct).ConfigureAwait(false))
            {
                if (e.Zero) continue;
                for (long p = e.Start; p < e.End; p += ChunkSize)
                {
                    int n = (int)Math.Min(ChunkSize, e.End - p);
                    await over.ReadAsync(p, bufA.AsMemory(0, n), ct).ConfigureAwait(false);
                    int nonZero = bufA.AsSpan(0, n).IndexOfAnyExcept((byte)0);
                    if (nonZero >= 0) return await MismatchAsync(stdout, p + nonZero).ConfigureAwait(false);
                }
            }
        }
        // qemu-img prints no final 100: the line shows where its steps' sum got to.
        if (meter is not null && imgA.VirtualSize != imgB.VirtualSize) meter.Add((float)Math.Abs(imgA.VirtualSize - imgB.VirtualSize) / Math.Max(imgA.VirtualSize, imgB.VirtualSize) * 100);
        await stdout.WriteLineAsync("Images are identical.").ConfigureAwait(false);
        return 0;
    }

    // QEMU's BDRV_BLOCK_* bits as bdrv_block_status_above reports them: DATA, ZERO, OFFSET_VALID,
    // ALLOCATED, and EOF where the piece reaches the end of the image (dropped for data found in a
    // backing file).
    private static int Status(ImageExtent e, bool reachesEnd) =>
        (e.Data ? 0x01 : 0) | (e.Zero ? 0x02 : 0) | (e.Offset.HasValue ? 0x04 : 0) | (e.Present ? 0x10 : 0)
        | (reachesEnd && (e.Depth == 0 || !e.Present) ? 0x20 : 0);

    private static long L2Span(Qcow2Image image) =>
        image.Header is { } h ? (long)h.ClusterSize * h.L2Entries : long.MaxValue;

    private static long NextBoundary(long pos, long span) => span == long.MaxValue ? long.MaxValue : (pos / span + 1) * span;

    private static async Task<int> MismatchAsync(TextWriter stdout, long offset)
    {
        await stdout.WriteLineAsync($"Content mismatch at offset {offset / Sector * Sector}!").ConfigureAwait(false);
        return 1;
    }
}
