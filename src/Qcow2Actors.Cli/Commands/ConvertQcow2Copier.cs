using System.Buffers;
using Qcow2Actors.Engine;

namespace Qcow2Actors.Cli.Commands;

/// <summary>What <c>q2a convert</c> was asked to do.</summary>
internal sealed record ConvertRequest(string Source, string Target)
{
    public string? Format { get; init; }
    public string OutFormat { get; init; } = "raw";
    public string? Snapshot { get; init; }
    public bool Progress { get; init; }
    public bool Compress { get; init; }
    public IReadOnlyList<string> Options { get; init; } = [];
    public string? BackingFile { get; init; }
    public string? BackingFormat { get; init; }
    /// <summary>-U: read the source sharing it with its writer.</summary>
    public bool ForceShare { get; init; }
    /// <summary>The source as resolved from its spelling (nbd://, json:, --image-opts); null: <see cref="Source"/> as a plain argument.</summary>
    public Sources.ImageSpec? SourceSpec { get; init; }
}

/// <summary>
/// Copies a source image's guest content into a freshly created qcow2 target through the write
/// engine, the way qemu-img convert decides what to write:
/// <list type="bullet">
/// <item>without a target backing file the target reads zeros wherever it is not written, so
/// zero and unallocated ranges are skipped, and so are zero blocks inside data (qemu-img's
/// default <c>-S 4k</c>; here the grain is max(4 KiB, target cluster) so no cluster is half written);</item>
/// <item>with a target backing file (<c>-B</c>) only what the source's top image decides is copied
/// (what it leaves to its backing chain is assumed to be in the new backing file), and its
/// zeros, stored or found in data, are written as zeros so the backing file does not show through;</item>
/// <item>with compression every target cluster that holds data is read whole and written with
/// <see cref="Qcow2Image.WriteCompressedAsync"/>; all-zero clusters are skipped (or zeroed over a backing file).</item>
/// </list>
/// Up to <c>parallel</c> requests are in flight against the target, each with its own buffer.
/// </summary>
internal sealed class Qcow2Copier(Qcow2Image src, Qcow2Image dst, long size, long contentEnd, bool targetHasBacking,
    ConvertCommand.ProgressMeter? meter, CancellationToken ct, int parallel = 8)
{
    private const int ChunkSize = 2 * 1024 * 1024;
    private readonly List<Task> _inFlight = new(parallel);
    private readonly int _clusterSize = dst.ClusterSize;

    /// <summary>Copies data, skipping zeros; whole chunks of up to 2 MiB per write.</summary>
    public async Task CopyAsync()
    {
        long grain = Math.Max(4096, _clusterSize);
        await foreach (var extent in src.GetMapAsync(0, contentEnd, ct).ConfigureAwait(false))
        {
            if (targetHasBacking && extent.Depth > 0) { meter?.Advance(extent.End); continue; }
            if (extent.Zero)
            {
                if (targetHasBacking) await SubmitAsync(ZeroAsync(extent.Start, extent.Length)).ConfigureAwait(false);
                meter?.Advance(extent.End);
                continue;
            }
            for (long pos = extent.Start; pos < extent.End;)
            {
                // Chunks end on a 2 MiB grid, which is a multiple of every grain.
                long chunkEnd = Math.Min(extent.End, (pos / ChunkSize + 1) * ChunkSize);
                await SubmitAsync(CopyChunkAsync(pos, (int)(chunkEnd - pos), grain)).ConfigureAwait(false);
                pos = chunkEnd;
                meter?.Advance(pos);
            }
        }
        await TailZeroesAsync().ConfigureAwait(false);
        await DrainAsync().ConfigureAwait(false);
    }

    private async Task CopyChunkAsync(long pos, int length, long grain)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            await src.ReadAsync(pos, buffer.AsMemory(0, length), ct).ConfigureAwait(false);
            // Runs of grains (on the global grid) that are all zero or all not.
            long end = pos + length;
            long runStart = pos;
            bool? runZero = null;
            for (long g = pos; g < end;)
            {
                long gEnd = Math.Min(end, (g / grain + 1) * grain);
                bool zero = !buffer.AsSpan((int)(g - pos), (int)(gEnd - g)).ContainsAnyExcept((byte)0);
                if (runZero is { } rz && rz != zero)
                {
                    await WriteRunAsync(buffer, pos, runStart, g, rz).ConfigureAwait(false);
                    runStart = g;
                }
                runZero = zero;
                g = gEnd;
            }
            if (runZero is { } last) await WriteRunAsync(buffer, pos, runStart, end, last).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private async ValueTask WriteRunAsync(byte[] buffer, long bufferStart, long from, long to, bool zero)
    {
        if (!zero)
            await dst.WriteAsync(from, buffer.AsMemory((int)(from - bufferStart), (int)(to - from)), false, ct).ConfigureAwait(false);
        else if (targetHasBacking)
            await dst.WriteZeroesAsync(from, to - from, false, false, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Compressed copy: every target cluster touched by data (or, over a backing file, by anything the
    /// source's top image decides) is read whole from the source and written compressed.
    /// </summary>
    public async Task CopyCompressedAsync()
    {
        long cs = _clusterSize;
        long next = 0; // first cluster index not yet handled
        await foreach (var extent in src.GetMapAsync(0, contentEnd, ct).ConfigureAwait(false))
        {
            bool relevant = targetHasBacking ? extent.Depth == 0 : !extent.Zero;
            if (!relevant) { meter?.Advance(extent.End); continue; }
            long first = Math.Max(extent.Start / cs, next);
            long last = (extent.End + cs - 1) / cs; // exclusive
            if (extent.Zero)
            {
                // Only over a backing file: whole clusters inside the run are zeroed in one request,
                // the partial ones at its edges are read whole (their other part may hold data).
                long wholeFrom = Math.Max(first, (extent.Start + cs - 1) / cs);
                long wholeTo = extent.End == size ? last : extent.End / cs;
                if (first < wholeFrom) await SubmitAsync(CompressClusterAsync(first)).ConfigureAwait(false);
                if (wholeFrom < wholeTo)
                    await SubmitAsync(ZeroAsync(wholeFrom * cs, Math.Min(size, wholeTo * cs) - wholeFrom * cs)).ConfigureAwait(false);
                for (long c = Math.Max(wholeTo, wholeFrom); c < last; c++)
                    await SubmitAsync(CompressClusterAsync(c)).ConfigureAwait(false);
            }
            else
            {
                for (long c = first; c < last; c++)
                {
                    await SubmitAsync(CompressClusterAsync(c)).ConfigureAwait(false);
                    meter?.Advance(Math.Min(size, (c + 1) * cs));
                }
            }
            next = Math.Max(next, last);
            meter?.Advance(extent.End);
        }
        await TailZeroesAsync().ConfigureAwait(false);
        await DrainAsync().ConfigureAwait(false);
    }

    private async Task CompressClusterAsync(long index)
    {
        int cs = _clusterSize;
        long offset = index * cs;
        int length = (int)Math.Min(cs, size - offset);
        int stored = (int)Math.Clamp(contentEnd - offset, 0, length);
        var buffer = ArrayPool<byte>.Shared.Rent(cs);
        try
        {
            if (stored > 0) await src.ReadAsync(offset, buffer.AsMemory(0, stored), ct).ConfigureAwait(false);
            buffer.AsSpan(stored, cs - stored).Clear();
            if (!buffer.AsSpan(0, length).ContainsAnyExcept((byte)0))
            {
                if (targetHasBacking) await dst.WriteZeroesAsync(offset, length, false, false, ct).ConfigureAwait(false);
            }
            else
                // A short last cluster is padded with zeros and compressed by the engine, as qemu-img does.
                await dst.WriteCompressedAsync(offset, buffer.AsMemory(0, length), ct).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private async Task ZeroAsync(long offset, long length) =>
        await dst.WriteZeroesAsync(offset, length, false, false, ct).ConfigureAwait(false);

    // With -l the target keeps the active size: past the snapshot's end it must read zeros.
    private async Task TailZeroesAsync()
    {
        if (targetHasBacking && contentEnd < size)
            await SubmitAsync(ZeroAsync(contentEnd, size - contentEnd)).ConfigureAwait(false);
    }

    private async ValueTask SubmitAsync(Task task)
    {
        _inFlight.Add(task);
        if (_inFlight.Count < parallel) return;
        var done = await Task.WhenAny(_inFlight).ConfigureAwait(false);
        _inFlight.Remove(done);
        await done.ConfigureAwait(false);
    }

    /// <summary>Runs a copy; on failure waits for the requests still in flight before the target is closed.</summary>
    public async Task RunAsync(bool compress)
    {
        try
        {
            if (compress) await CopyCompressedAsync().ConfigureAwait(false);
            else await CopyAsync().ConfigureAwait(false);
        }
        catch
        {
            try { await Task.WhenAll(_inFlight).ConfigureAwait(false); }
            catch (Exception) { /* the first failure is the one to report */ }
            throw;
        }
    }

    private async Task DrainAsync()
    {
        var all = _inFlight.ToArray();
        _inFlight.Clear();
        await Task.WhenAll(all).ConfigureAwait(false);
    }
}
