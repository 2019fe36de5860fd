using System.Buffers;
using Qcow2Actors.Engine;

namespace Qcow2Actors.Cli.Commands;

/// <summary>How <see cref="ConvertCopier"/> copies: what the options of <c>q2a convert</c> decide.</summary>
/// <param name="Size">Bytes the target receives (the source's size, or with -l the active image's).</param>
/// <param name="ContentEnd">End of what the source holds; past it, up to <paramref name="Size"/>, zeros.</param>
internal sealed record ConvertPlan(long Size, long ContentEnd)
{
    /// <summary>-B: what the source leaves to its backing chain is not copied (the target's backing file has it).</summary>
    public bool SkipBelowTop { get; init; }
    /// <summary>The target may hold other data (a backing file, or -n without --target-is-zero): zeros are written as zeros.</summary>
    public bool WriteZeros { get; init; }
    /// <summary>-S: zero runs of this many bytes are not written as data; 0 writes every byte as data.</summary>
    public long SparseSize { get; init; } = ConvertRequest.DefaultSparseSize;
    /// <summary>-m: requests in flight.</summary>
    public int Parallel { get; init; } = ConvertRequest.DefaultParallel;
    /// <summary>Not -W: every request's write waits for the previous one's, so the target is written front to back.</summary>
    public bool InOrder { get; init; } = true;
    /// <summary>-c: every cluster compressed.</summary>
    public bool Compress { get; init; }
    /// <summary>--salvage: read errors become zeros and a warning.</summary>
    public bool Salvage { get; init; }
    /// <summary>-r: the pace of the copy.</summary>
    public RateLimit Rate { get; init; } = new(0);
}

/// <summary>
/// Copies a source image's guest content into a convert target the way qemu-img convert decides what
/// to write:
/// <list type="bullet">
/// <item>a fresh target reads zeros wherever it is not written, so zero and unallocated ranges are
/// skipped, and so are zero runs inside data of <c>-S</c> bytes (default 4 KiB; on a qcow2 target the
/// grain is at least its cluster, so no cluster is half written); <c>-S 0</c> writes every byte as data;</item>
/// <item>a target that may hold other data (a backing file, or <c>-n</c> without <c>--target-is-zero</c>)
/// gets its zero ranges written as zeros; with a backing file (<c>-B</c>) only what the source's top
/// image decides is copied;</item>
/// <item>with compression every target cluster that holds data is read whole and written compressed.</item>
/// </list>
/// Up to <c>-m</c> requests are in flight, each with its own buffer; without <c>-W</c> their writes
/// reach the target in order. With <c>--salvage</c> a failed block-status query is taken as data and a
/// failed read is retried in 4 KiB pieces, the unreadable ones written as zeros, one warning line per
/// unreadable run.
/// </summary>
internal sealed class ConvertCopier(Qcow2Image src, IConvertTarget dst, ConvertPlan plan, ProgressMeter? meter, CancellationToken ct)
{
    private const int ChunkSize = 2 * 1024 * 1024;
    private const int SalvageGrain = 4096;
    private readonly List<Task> _inFlight = new(plan.Parallel);
    private readonly int _clusterSize = dst.ClusterSize;
    private readonly long _size = plan.Size;
    private Task _previous = Task.CompletedTask;

    /// <summary>Runs the copy; on failure waits for the requests still in flight before the target is closed.</summary>
    public async Task RunAsync()
    {
        try
        {
            if (plan.Compress) await CopyCompressedAsync().ConfigureAwait(false);
            else await CopyAsync().ConfigureAwait(false);
        }
        catch
        {
            try { await Task.WhenAll(_inFlight).ConfigureAwait(false); }
            catch (Exception) { /* the first failure is the one to report */ }
            throw;
        }
    }

    private async Task CopyAsync()
    {
        long grain = plan.SparseSize == 0 ? 0 : Math.Max(plan.SparseSize, _clusterSize);
        await foreach (var extent in WholeDataAsync(MapAsync()).ConfigureAwait(false))
        {
            if (plan.SkipBelowTop && extent.Depth > 0) { meter?.Advance(extent.End); continue; }
            if (extent.Zero && plan.SparseSize > 0)
            {
                if (plan.WriteZeros) await SubmitAsync(turn => ZeroAsync(extent.Start, extent.Length, turn)).ConfigureAwait(false);
                meter?.Advance(extent.End);
                continue;
            }
            for (long pos = extent.Start; pos < extent.End;)
            {
                // Chunks end on a 2 MiB grid, which is a multiple of every grain.
                long chunkEnd = Math.Min(extent.End, (pos / ChunkSize + 1) * ChunkSize);
                long start = pos;
                await SubmitAsync(turn => CopyChunkAsync(start, (int)(chunkEnd - start), grain, turn)).ConfigureAwait(false);
                pos = chunkEnd;
                meter?.Advance(pos);
            }
        }
        await TailZeroesAsync().ConfigureAwait(false);
        await DrainAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// Data runs joined with the zero-and-data runs beside them (a data cluster over a host-file hole): copied
    /// as one, the hole's zeros shorter than a target cluster are written, so the target's clusters are whole,
    /// as qemu's copy-on-write leaves them.
    /// </summary>
    private static async IAsyncEnumerable<ImageExtent> WholeDataAsync(IAsyncEnumerable<ImageExtent> map)
    {
        ImageExtent? pending = null;
        await foreach (var e in map.ConfigureAwait(false))
        {
            if (pending is not null && pending.Data && e.Data && pending.Depth == e.Depth && (pending.Zero != e.Zero || !e.Zero))
            {
                pending = pending with { Length = pending.Length + e.Length, Zero = false };
                continue;
            }
            if (pending is not null) yield return pending;
            pending = e;
        }
        if (pending is not null) yield return pending;
    }

    /// <summary>
    /// The source's map over what it holds. With --salvage it is asked 2 MiB at a time, and a window
    /// whose block status cannot be read is taken as data (its reads then salvage what they can).
    /// </summary>
    private async IAsyncEnumerable<ImageExtent> MapAsync()
    {
        if (!plan.Salvage)
        {
            await foreach (var extent in src.GetMapAsync(0, plan.ContentEnd, ct).ConfigureAwait(false)) yield return extent;
            yield break;
        }
        for (long pos = 0; pos < plan.ContentEnd; pos += ChunkSize)
        {
            long length = Math.Min(ChunkSize, plan.ContentEnd - pos);
            var window = new List<ImageExtent>();
            try
            {
                await foreach (var extent in src.GetMapAsync(pos, length, ct).ConfigureAwait(false)) window.Add(extent);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                await WarnAsync($"error while reading block status at offset {pos}: {ex.Message}").ConfigureAwait(false);
                window = [new ImageExtent(pos, length, 0, true, false, true, null, null)];
            }
            foreach (var extent in window) yield return extent;
        }
    }

    private async Task CopyChunkAsync(long pos, int length, long grain, Task turn)
    {
        await plan.Rate.WaitAsync(length, ct).ConfigureAwait(false);
        var buffer = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            await ReadAsync(pos, buffer.AsMemory(0, length)).ConfigureAwait(false);
            await turn.ConfigureAwait(false);
            if (grain == 0)
            {
                await dst.WriteAsync(pos, buffer.AsMemory(0, length), ct).ConfigureAwait(false);
                return;
            }
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
            await dst.WriteAsync(from, buffer.AsMemory((int)(from - bufferStart), (int)(to - from)), ct).ConfigureAwait(false);
        else if (plan.WriteZeros)
            await dst.WriteZeroesAsync(from, to - from, ct).ConfigureAwait(false);
    }

    /// <summary>Reads from the source; with --salvage what cannot be read reads as zeros, with a warning per run.</summary>
    private async Task ReadAsync(long pos, Memory<byte> buffer)
    {
        try
        {
            await src.ReadAsync(pos, buffer, ct).ConfigureAwait(false);
            return;
        }
        catch (Exception ex) when (plan.Salvage && ex is not OperationCanceledException)
        {
            // Retried piece by piece below.
        }
        long badStart = -1;
        string? badReason = null;
        for (int off = 0; off < buffer.Length; off += SalvageGrain)
        {
            int n = Math.Min(SalvageGrain, buffer.Length - off);
            try
            {
                await src.ReadAsync(pos + off, buffer.Slice(off, n), ct).ConfigureAwait(false);
                if (badStart >= 0) await WarnReadAsync(badStart, pos + off, badReason!).ConfigureAwait(false);
                badStart = -1;
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                buffer.Span.Slice(off, n).Clear();
                if (badStart < 0) (badStart, badReason) = (pos + off, ex.Message);
            }
        }
        if (badStart >= 0) await WarnReadAsync(badStart, pos + buffer.Length, badReason!).ConfigureAwait(false);
    }

    private static Task WarnReadAsync(long start, long end, string reason) =>
        WarnAsync($"error while reading offset {start} ({end - start} bytes, written as zeros): {reason}");

    private static Task WarnAsync(string text) => Console.Error.WriteLineAsync($"q2a: warning: {text.ReplaceLineEndings(" ")}");

    /// <summary>
    /// Compressed copy: every target cluster touched by data (or, when zeros must be written, by
    /// anything the source decides) is read whole from the source and written compressed.
    /// </summary>
    private async Task CopyCompressedAsync()
    {
        long cs = _clusterSize;
        long next = 0; // first cluster index not yet handled
        await foreach (var extent in MapAsync().ConfigureAwait(false))
        {
            bool relevant = plan.SkipBelowTop ? extent.Depth == 0 : plan.WriteZeros || !extent.Zero;
            if (!relevant) { meter?.Advance(extent.End); continue; }
            long first = Math.Max(extent.Start / cs, next);
            long last = (extent.End + cs - 1) / cs; // exclusive
            if (extent.Zero)
            {
                // Only when zeros are written: whole clusters inside the run are zeroed in one request,
                // the partial ones at its edges are read whole (their other part may hold data).
                long wholeFrom = Math.Max(first, (extent.Start + cs - 1) / cs);
                long wholeTo = extent.End == _size ? last : extent.End / cs;
                if (first < wholeFrom) await SubmitCompressAsync(first).ConfigureAwait(false);
                if (wholeFrom < wholeTo)
                {
                    long from = wholeFrom * cs, length = Math.Min(_size, wholeTo * cs) - wholeFrom * cs;
                    await SubmitAsync(turn => ZeroAsync(from, length, turn)).ConfigureAwait(false);
                }
                for (long c = Math.Max(wholeTo, wholeFrom); c < last; c++)
                    await SubmitCompressAsync(c).ConfigureAwait(false);
            }
            else
            {
                for (long c = first; c < last; c++)
                {
                    await SubmitCompressAsync(c).ConfigureAwait(false);
                    meter?.Advance(Math.Min(_size, (c + 1) * cs));
                }
            }
            next = Math.Max(next, last);
            meter?.Advance(extent.End);
        }
        await TailZeroesAsync().ConfigureAwait(false);
        await DrainAsync().ConfigureAwait(false);
    }

    private ValueTask SubmitCompressAsync(long index) => SubmitAsync(turn => CompressClusterAsync(index, turn));

    private async Task CompressClusterAsync(long index, Task turn)
    {
        int cs = _clusterSize;
        long offset = index * cs;
        int length = (int)Math.Min(cs, _size - offset);
        int stored = (int)Math.Clamp(plan.ContentEnd - offset, 0, length);
        await plan.Rate.WaitAsync(length, ct).ConfigureAwait(false);
        var buffer = ArrayPool<byte>.Shared.Rent(cs);
        try
        {
            if (stored > 0) await ReadAsync(offset, buffer.AsMemory(0, stored)).ConfigureAwait(false);
            buffer.AsSpan(stored, cs - stored).Clear();
            await turn.ConfigureAwait(false);
            if (!buffer.AsSpan(0, length).ContainsAnyExcept((byte)0))
            {
                if (plan.WriteZeros) await dst.WriteZeroesAsync(offset, length, ct).ConfigureAwait(false);
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

    private async Task ZeroAsync(long offset, long length, Task turn)
    {
        await plan.Rate.WaitAsync(length, ct).ConfigureAwait(false);
        await turn.ConfigureAwait(false);
        await dst.WriteZeroesAsync(offset, length, ct).ConfigureAwait(false);
    }

    // With -l the target keeps the active size: past the snapshot's end it must read zeros.
    private async Task TailZeroesAsync()
    {
        if (plan.ContentEnd >= _size) return;
        long from = plan.ContentEnd, length = _size - plan.ContentEnd;
        if (plan.SparseSize == 0 && !plan.Compress)
        {
            // -S 0 allocates everything, the tail too.
            for (long pos = from; pos < _size; pos += ChunkSize)
            {
                long start = pos;
                int n = (int)Math.Min(ChunkSize, _size - start);
                await SubmitAsync(turn => WriteZeroDataAsync(start, n, turn)).ConfigureAwait(false);
            }
        }
        else if (plan.WriteZeros)
            await SubmitAsync(turn => ZeroAsync(from, length, turn)).ConfigureAwait(false);
    }

    private async Task WriteZeroDataAsync(long pos, int length, Task turn)
    {
        await plan.Rate.WaitAsync(length, ct).ConfigureAwait(false);
        var buffer = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            buffer.AsSpan(0, length).Clear();
            await turn.ConfigureAwait(false);
            await dst.WriteAsync(pos, buffer.AsMemory(0, length), ct).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>
    /// Starts a request; <paramref name="request"/> gets the task its write must wait for (the previous
    /// request, unless -W). Returns once fewer than -m requests are in flight.
    /// </summary>
    private async ValueTask SubmitAsync(Func<Task, Task> request)
    {
        var task = request(plan.InOrder ? _previous : Task.CompletedTask);
        _previous = task;
        _inFlight.Add(task);
        if (_inFlight.Count < plan.Parallel) return;
        var done = await Task.WhenAny(_inFlight).ConfigureAwait(false);
        _inFlight.Remove(done);
        await done.ConfigureAwait(false);
    }

    private async Task DrainAsync()
    {
        var all = _inFlight.ToArray();
        _inFlight.Clear();
        await Task.WhenAll(all).ConfigureAwait(false);
    }
}
