using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a bench [-c COUNT] [-d DEPTH] [-f FMT] [--flush-interval=N] [-i AIO] [-n] [--no-drain] [-o OFFSET]
/// [--pattern=BYTE] [-q] [-s SIZE] [-S STEP] [-t CACHE] [-w] [-U] IMG</c>, as qemu-img bench: COUNT
/// requests of SIZE bytes (reads, or writes of the pattern byte with <c>-w</c>), DEPTH in flight,
/// from OFFSET on in steps of STEP wrapping at the end of the disk; with a flush interval, a flush
/// after every N completed requests (the queue drained first unless <c>--no-drain</c>). The same
/// two lines (three with flushes) and exit codes as qemu-img.
/// </summary>
internal static class BenchCommand
{
    private const string Suffixes = "You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.";

    public static Command Create()
    {
        var count = new Option<string?>("-c") { Description = "number of requests (default 75000)" };
        var depth = new Option<string?>("-d") { Description = "requests in flight (default 64)" };
        var format = new Option<string?>("-f") { Description = "image format; probed when absent" };
        var flushInterval = new Option<string?>("--flush-interval") { Description = "flush after every N requests (write tests only)" };
        var aio = new Option<string?>("-i") { Description = "AIO mode: threads, native or io_uring (all run on .NET's asynchronous file I/O)" };
        var native = new Option<bool>("-n") { Description = "native AIO (needs -t none, as in qemu-img)" };
        var noDrain = new Option<bool>("--no-drain") { Description = "flush without waiting for the requests in flight" };
        var offset = new Option<string?>("-o") { Description = "offset of the first request (default 0)" };
        var pattern = new Option<string?>("--pattern") { Description = "byte written by write requests (default 0)" };
        var quiet = new Option<bool>("-q") { Description = "quiet (qemu-img bench prints its lines anyway)" };
        var size = new Option<string?>("-s") { Description = "request size (default 4096)" };
        var step = new Option<string?>("-S") { Description = "distance between request offsets (default: the request size)" };
        var cache = new Option<string?>("-t") { Description = "cache mode: none, writeback (default), writethrough, directsync, unsafe" };
        var write = new Option<bool>("-w") { Description = "write instead of read" };
        var forceShare = ForceShareOption.Create();
        var image = new Argument<string[]>("filename") { Arity = ArgumentArity.ZeroOrMore };
        var command = new Command("bench", "Run a simple image benchmark")
            { count, depth, format, flushInterval, aio, native, noDrain, offset, pattern, quiet, size, step, cache, write, forceShare, image };
        var sources = Sources.SourceOptions.AddTo(command);
        command.SetAction((parse, ct) => CliRunner.RunAsync(() =>
        {
            var s = new Settings
            {
                Count = Integer(parse.GetValue(count), 75000, int.MaxValue, "Invalid request count specified"),
                // qemu-img waits forever with depth 0; q2a refuses it instead.
                Depth = Integer(parse.GetValue(depth), 64, int.MaxValue, "Invalid queue depth specified", min: 1),
                Format = parse.GetValue(format),
                FlushInterval = Integer(parse.GetValue(flushInterval), 0, int.MaxValue, "Invalid flush interval specified"),
                Drain = !parse.GetValue(noDrain),
                Offset = Size(parse.GetValue(offset), 0, long.MaxValue, "offset"),
                Pattern = (byte)Integer(parse.GetValue(pattern), 0, 0xff, "Invalid pattern byte specified"),
                BufferSize = (int)Size(parse.GetValue(size), 4096, int.MaxValue, "buffer size"),
                Step = (int)Size(parse.GetValue(step), 0, int.MaxValue, "step_size"),
                Write = parse.GetValue(write),
                ForceShare = parse.GetValue(forceShare),
            };
            var cacheText = parse.GetValue(cache);
            var cacheMode = CacheModes.Parse(cacheText) ?? throw new CliException("Invalid cache mode");
            bool nativeAio = parse.GetValue(native);
            switch (parse.GetValue(aio))
            {
                case null or "threads" or "io_uring": break;
                case "native": nativeAio = true; break;
                case { } other: throw new CliException($"Invalid aio option: {other}");
            }
            var files = parse.GetValue(image) ?? [];
            if (files.Length != 1) throw new CliException("Expecting one image file name");
            if (nativeAio && cacheMode != CacheMode.None)
                throw new CliException($"Could not open '{files[0]}': aio=native was specified, but it requires cache.direct=on, which was not specified.");
            var spec = sources.ResolveHostFile(parse, files[0], s.Format, "bench");
            return RunAsync(spec.Path!, s with { Cache = cacheMode, Format = spec.Format }, Console.Out, ct);
        }));
        return command;
    }

    internal sealed record Settings
    {
        public int Count { get; init; } = 75000;
        public int Depth { get; init; } = 64;
        public string? Format { get; init; }
        public int FlushInterval { get; init; }
        public bool Drain { get; init; } = true;
        public long Offset { get; init; }
        public byte Pattern { get; init; }
        public int BufferSize { get; init; } = 4096;
        public int Step { get; init; }
        public bool Write { get; init; }
        public bool ForceShare { get; init; }
        public CacheMode Cache { get; init; }
    }

    // qemu_strtoul with base 0: decimal, 0x hex or 0 octal, no suffix.
    private static int Integer(string? text, int fallback, int max, string error, int min = 0)
    {
        if (text is null) return fallback;
        ulong value;
        bool ok = text.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? ulong.TryParse(text.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value)
            : text.Length > 1 && text[0] == '0'
                ? TryOctal(text, out value)
                : ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out value);
        if (!ok || value > (ulong)max || value < (ulong)min) throw new CliException(error);
        return (int)value;
    }

    private static bool TryOctal(string text, out ulong value)
    {
        value = 0;
        foreach (var c in text)
        {
            if (c is < '0' or > '7' || value > ulong.MaxValue / 8) return false;
            value = value * 8 + (ulong)(c - '0');
        }
        return true;
    }

    // cvtnum: a size with k/M/G/T/P/E suffixes.
    private static long Size(string? text, long fallback, long max, string name)
    {
        if (text is null) return fallback;
        if (QemuSize.TryParse(text, out var value) != QemuSizeError.None || value > (ulong)max)
            throw new CliException($"Invalid {name} specified. {Suffixes}");
        return (long)value;
    }

    public static async Task<int> RunAsync(string path, Settings s, TextWriter stdout, CancellationToken ct)
    {
        if (!s.Write && s.FlushInterval > 0) throw new CliException("--flush-interval is only available in write tests");
        if (s.FlushInterval > 0 && s.FlushInterval < s.Depth) throw new CliException("Flush interval can't be smaller than depth");
        if (s.Write && s.ForceShare) throw new CliException($"Could not open '{path}': force-share=on can only be used with read-only images");
        await using var host = ImageHost.Create();
        var image = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = !s.Write, Format = s.Format, ForceShare = s.ForceShare, Cache = s.Cache }, ct).ConfigureAwait(false);
        await using (image.ConfigureAwait(false))
        {
            int step = s.Step == 0 ? s.BufferSize : s.Step;
            await stdout.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                $"Sending {s.Count} {(s.Write ? "write" : "read")} requests, {s.BufferSize} bytes each, {s.Depth} in parallel (starting at offset {s.Offset}, step size {step})")).ConfigureAwait(false);
            if (s.FlushInterval > 0) await stdout.WriteLineAsync($"Sending flush every {s.FlushInterval} requests").ConfigureAwait(false);
            await stdout.FlushAsync(ct).ConfigureAwait(false);
            var clock = Stopwatch.StartNew();
            try
            {
                await new Run(image, s, step).ExecuteAsync(ct).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is IOException or ArgumentOutOfRangeException or Qcow2ImageCorruptException)
            {
                throw new CliException(ex is Qcow2NoSpaceException ? "Failed request: No space left on device" : "Failed request: Input/output error", ex);
            }
            await stdout.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"Run completed in {clock.Elapsed.TotalSeconds:F3} seconds.")).ConfigureAwait(false);
        }
        return 0;
    }

    /// <summary>The request loop: at most Depth requests in flight, a flush every FlushInterval completions.</summary>
    private sealed class Run(Qcow2Image image, Settings s, int step)
    {
        private readonly byte[] _buffer = CreateBuffer(s);
        private long _next = s.Offset;

        private static byte[] CreateBuffer(Settings s)
        {
            var buffer = new byte[(long)s.Depth * s.BufferSize];
            Array.Fill(buffer, s.Pattern);
            return buffer;
        }

        public async Task ExecuteAsync(CancellationToken ct)
        {
            int remaining = s.Count;
            var inFlight = new List<(Task Task, int Slot)>();
            var freeSlots = new Stack<int>(Enumerable.Range(0, s.Depth).Reverse());
            Task? undrainedFlush = null;
            while (remaining > 0)
            {
                while (remaining > inFlight.Count && inFlight.Count < s.Depth)
                {
                    int slot = freeSlots.Pop();
                    inFlight.Add((Issue(slot, ct), slot));
                }
                var done = await Task.WhenAny(inFlight.Select(f => f.Task)).ConfigureAwait(false);
                int index = inFlight.FindIndex(f => f.Task == done);
                freeSlots.Push(inFlight[index].Slot);
                inFlight.RemoveAt(index);
                await done.ConfigureAwait(false);
                // As qemu-img counts: the requests not yet completed, the one just done excluded, before it is subtracted.
                int notDone = remaining - inFlight.Count - 1;
                remaining--;
                if (s.FlushInterval > 0 && notDone % s.FlushInterval == 0)
                {
                    if (s.Drain)
                    {
                        foreach (var f in inFlight) await f.Task.ConfigureAwait(false);
                        remaining -= inFlight.Count;
                        foreach (var f in inFlight) freeSlots.Push(f.Slot);
                        inFlight.Clear();
                        await image.FlushAsync(ct).ConfigureAwait(false);
                    }
                    else
                    {
                        if (undrainedFlush is not null) await undrainedFlush.ConfigureAwait(false);
                        undrainedFlush = image.FlushAsync(ct).AsTask();
                    }
                }
            }
            if (undrainedFlush is not null) await undrainedFlush.ConfigureAwait(false);
        }

        private Task Issue(int slot, CancellationToken ct)
        {
            long offset = _next;
            _next = (_next + step) % image.VirtualSize;
            var data = _buffer.AsMemory(slot * s.BufferSize, s.BufferSize);
            return s.Write ? image.WriteAsync(offset, data, cancellationToken: ct).AsTask() : image.ReadAsync(offset, data, ct).AsTask();
        }
    }
}
