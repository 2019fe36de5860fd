using Qcow2Actors.Engine.Device;
using System.CommandLine;
using System.Globalization;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a convert [-f FMT] [-O raw|qcow2] [-c] [-o OPTIONS] [-B BACKING -F FMT] [-l SNAPSHOT] [-n] [-S SIZE] [-W] [-m N]
/// [-t CACHE] [-T SRC_CACHE] [--target-is-zero] [--salvage] [-C] [-r RATE] [-p] [-q] [-U] SRC DST</c>, as qemu-img convert.
/// The request (<see cref="ConvertRequest"/>) is checked first; the target is created or, with -n, opened
/// (<see cref="IConvertTarget"/>, locked before it changes); <see cref="ConvertCopier"/> decides what to write.
/// </summary>
internal static class ConvertCommand
{
    public static Command Create()
    {
        var format = new Option<string?>("-f") { Description = "source format (qcow2 or raw); probed when absent" };
        var outFormat = new Option<string>("-O") { Description = "output format: raw or qcow2", DefaultValueFactory = _ => "raw" };
        var snapshot = new Option<string?>("-l") { Description = "snapshot to read: ID_OR_NAME, snapshot.id=ID or snapshot.name=NAME" };
        var progress = new Option<bool>("-p") { Description = "show progress" };
        var quiet = new Option<bool>("-q") { Description = "quiet: no progress" };
        var compress = new Option<bool>("-c") { Description = "compress every cluster of the target (qcow2 only)" };
        var options = new Option<string[]>("-o") { Description = "target format options, comma separated" };
        var backing = new Option<string?>("-B") { Description = "backing file of the target: only what the source's top image holds is copied" };
        var backingFormat = new Option<string?>("-F") { Description = "format of the target's backing file" };
        var forceShare = ForceShareOption.Create();
        var noCreate = new Option<bool>("-n") { Description = "the target exists: write into it, do not create it (it must be at least as large)" };
        var sparse = new Option<string?>("-S") { Description = "sparse detection: zero runs of this size are not written (default 4k; 0 writes everything)" };
        var outOfOrder = new Option<bool>("-W") { Description = "let writes reach the target out of order" };
        var parallel = new Option<string?>("-m") { Description = "copy requests in flight (1 to 16, default 8)" };
        var cache = new Option<string?>("-t") { Description = "target cache mode: none, writeback (default), writethrough, directsync, unsafe" };
        var sourceCache = new Option<string?>("-T") { Description = "source cache mode: none, writeback (default), writethrough, directsync, unsafe" };
        var targetIsZero = new Option<bool>("--target-is-zero") { Description = "with -n: the target reads zeros, so zeros are not written" };
        var salvage = new Option<bool>("--salvage") { Description = "source read errors become zeros, with a warning" };
        var copyOffload = new Option<bool>("-C") { Description = "copy offloading (accepted as qemu-img accepts it; copies normally)" };
        var rate = new Option<string?>("-r") { Description = "rate limit in bytes per second (suffixes k, M, G...; 0: none)" };
        var source = new Argument<string>("filename") { Description = "source image" };
        var target = new Argument<string>("output_filename") { Description = "target file" };
        var command = new Command("convert", "Convert an image (or one of its snapshots) to a raw or qcow2 image")
        {
            format, outFormat, snapshot, progress, quiet, compress, options, backing, backingFormat, forceShare,
            noCreate, sparse, outOfOrder, parallel, cache, sourceCache, targetIsZero, salvage, copyOffload, rate, source, target,
        };
        var sources = Sources.SourceOptions.AddTo(command);
        command.SetAction((parse, ct) => CliRunner.RunAsync(() =>
        {
            var sparseText = parse.GetValue(sparse);
            return RunAsync(new ConvertRequest(parse.GetValue(source)!, parse.GetValue(target)!)
            {
                Format = parse.GetValue(format),
                OutFormat = parse.GetValue(outFormat)!,
                Snapshot = parse.GetValue(snapshot),
                Progress = parse.GetValue(progress) && !parse.GetValue(quiet),
                Compress = parse.GetValue(compress),
                Options = parse.GetValue(options) ?? [],
                BackingFile = parse.GetValue(backing),
                BackingFormat = parse.GetValue(backingFormat),
                ForceShare = parse.GetValue(forceShare),
                NoCreate = parse.GetValue(noCreate),
                SparseSize = sparseText is null ? ConvertRequest.DefaultSparseSize : ConvertRequest.ParseSparseSize(sparseText),
                SparseSizeGiven = sparseText is not null,
                OutOfOrder = parse.GetValue(outOfOrder),
                Parallel = parse.GetValue(parallel) is { } m ? ConvertRequest.ParseParallel(m) : ConvertRequest.DefaultParallel,
                TargetCache = CacheModes.ParseOrRefuse(parse.GetValue(cache), source: false),
                SourceCache = CacheModes.ParseOrRefuse(parse.GetValue(sourceCache), source: true),
                TargetIsZero = parse.GetValue(targetIsZero),
                Salvage = parse.GetValue(salvage),
                CopyOffload = parse.GetValue(copyOffload),
                RateLimit = parse.GetValue(rate) is { } r ? ConvertRequest.ParseRateLimit(r) : 0,
                SourceSpec = sources.Resolve(parse, parse.GetValue(source)!, parse.GetValue(format)),
            }, ct);
        }));
        ConvertBitmaps.Attach(command, source, target, format, outFormat, options);
        return command;
    }

    /// <summary>Strips qemu-img's <c>snapshot.id=</c> / <c>snapshot.name=</c> prefixes; a bare value is an id or a name.</summary>
    internal static string? SnapshotSelector(string? spec)
    {
        if (spec is null) return null;
        foreach (var prefix in new[] { "snapshot.id=", "snapshot.name=" })
            if (spec.StartsWith(prefix, StringComparison.Ordinal)) return spec[prefix.Length..];
        return spec;
    }

    /// <summary>The raw-output form the read-side tests call.</summary>
    public static Task<int> RunAsync(string sourcePath, string targetPath, string? format, string outFormat, string? snapshot,
        bool progress, CancellationToken ct) =>
        RunAsync(new ConvertRequest(sourcePath, targetPath) { Format = format, OutFormat = outFormat, Snapshot = snapshot, Progress = progress }, ct);

    public static async Task<int> RunAsync(ConvertRequest request, CancellationToken ct)
    {
        request.Validate();
        if (request.OutFormat is not ("raw" or "qcow2"))
            throw new NotSupportedException($"output format '{request.OutFormat}' is not supported (raw or qcow2)");
        if (request.OutFormat == "raw")
        {
            if (request.Compress) throw new NotSupportedException("Compression not supported for this file format");
            if (request.BackingFile is not null && !request.NoCreate) throw new NotSupportedException("Backing file not supported for file format 'raw'");
            if (request.Options.Count > 0) throw new NotSupportedException("q2a convert -O raw takes no -o options");
        }
        // Parse the target's options before touching anything, as qemu-img does (its parse errors
        // name no file; the shared -o parser is create's).
        var targetOptions = request.OutFormat == "qcow2" && !request.NoCreate ? CreateOptions.Parse("qcow2", request.Options, imagePath: null) : null;
        if (targetOptions is { HelpRequested: true })
        {
            await Console.Out.WriteAsync(targetOptions.HelpText()).ConfigureAwait(false);
            return 0;
        }
        // -B and -F win over backing_file= and backing_fmt=.
        if (request.BackingFile is { } b) targetOptions?.Set("backing_file", b);
        if (request.BackingFormat is { } f) targetOptions?.Set("backing_fmt", f);
        if (targetOptions?.Text("backing_file") is not null && targetOptions.Text("backing_fmt") is null)
            throw new ArgumentException("Use of backing file requires explicit backing format");

        if (string.Equals(Path.GetFullPath(request.Source), Path.GetFullPath(request.Target), StringComparison.Ordinal))
            throw new ArgumentException($"'{request.Target}' is the source image: converting onto itself would destroy it");
        await using var src = await Sources.ImageSources.OpenReadOnlyAsync(request.SourceSpec ?? Sources.ImageSpec.Resolve(request.Source, false, request.Format, Sources.SourceObjects.Empty),
            request.ForceShare, SnapshotSelector(request.Snapshot), ct, request.SourceCache).ConfigureAwait(false);
        // qemu-img convert -l keeps the active image's size (it swaps in the snapshot's L1 only):
        // match it, zeros past the snapshot's own end, cut at the active size.
        long size = request.Snapshot is not null && src.Header is { } active ? active.Size : src.VirtualSize;
        long contentEnd = Math.Min(size, src.VirtualSize);
        bool hasBacking = targetOptions?.Text("backing_file") is not null || (request.NoCreate && request.BackingFile is not null);
        var target = await OpenTargetAsync(request, targetOptions, size, ct).ConfigureAwait(false);
        await using (target.ConfigureAwait(false))
        {
            var meter = request.Progress ? new ProgressMeter(size) : null;
            meter?.Print(0);
            if (meter is not null)
            {
                var extents = new List<ImageExtent>();
                await foreach (var e in src.GetMapAsync(0, contentEnd, ct).ConfigureAwait(false)) extents.Add(e);
                meter.Schedule(ProgressTicks(extents, src.Info.ClusterSize ?? 512, countZeros: request.SparseSize == 0, skipBelowTop: hasBacking));
            }
            var plan = new ConvertPlan(size, contentEnd)
            {
                SkipBelowTop = hasBacking,
                WriteZeros = hasBacking || (request.NoCreate && !request.TargetIsZero),
                SparseSize = request.SparseSize,
                Parallel = request.Parallel,
                InOrder = !request.OutOfOrder,
                Compress = request.Compress,
                Salvage = request.Salvage,
                Rate = new RateLimit(request.RateLimit),
            };
            await new ConvertCopier(src, target, plan, meter, ct).RunAsync().ConfigureAwait(false);
            if (target is RawConvertTarget raw) raw.Flush();
            meter?.Finish();
        }
        return 0;
    }

    /// <summary>Creates the target (or with -n opens the existing one), locked from before it changes to the end.</summary>
    private static async Task<IConvertTarget> OpenTargetAsync(ConvertRequest request, CreateOptions? targetOptions, long size, CancellationToken ct)
    {
        if (request.OutFormat == "raw") return RawConvertTarget.Open(request.Target, size, request.NoCreate);
        if (request.NoCreate)
        {
            var existing = await Qcow2ConvertTarget.OpenAsync(request.Target, request.TargetCache, null, ct).ConfigureAwait(false);
            if (existing.Size >= size) return existing;
            await existing.DisposeAsync().ConfigureAwait(false);
            throw new CliException("output file is smaller than input file");
        }
        Qcow2CreateOptions create;
        try
        {
            // The source decides the size, as in qemu-img convert (a size= option is ignored).
            create = targetOptions!.ToQcow2Options(size, $"{request.Target}: error while converting qcow2: ");
            if (create.DataFile is not null && request.Compress)
                throw new NotSupportedException("Compression is not supported with an external data file");
        }
        catch (ArgumentException ex)
        {
            throw new ArgumentException($"{request.Target}: error while converting qcow2: {ex.Message}", ex);
        }
        var hold = TestHold.FromEnvironment();
        try
        {
            return await Qcow2ConvertTarget.CreateAsync(request.Target, create, request.TargetCache, () => hold.AtAsync("created"), ct).ConfigureAwait(false);
        }
        catch (ArgumentException ex)
        {
            throw new ArgumentException($"{request.Target}: error while converting qcow2: {ex.Message}", ex);
        }
    }

    /// <summary>
    /// The progress qemu-img convert prints: the share of the bytes it copies (data; zeros too with -S 0;
    /// not what a target's backing file provides) done after each step of its copy loop. A step ends where
    /// the source's block status changes, is cut back to a source cluster boundary when that leaves some of
    /// it (qemu-img keeps its status queries cluster-aligned), and a data step is at most 2 MiB.
    /// </summary>
    internal static List<(long End, float Value)> ProgressTicks(IReadOnlyList<ImageExtent> extents, long alignment, bool countZeros, bool skipBelowTop)
    {
        const long Buffer = 2 * 1024 * 1024;
        var steps = new List<(long End, long Length)>();
        long total = 0;
        foreach (var e in extents)
        {
            bool data = !e.Zero && !(skipBelowTop && e.Depth > 0);
            bool counted = data || (countZeros && e.Zero && !(skipBelowTop && e.Depth > 0));
            for (long pos = e.Start; pos < e.End;)
            {
                long n = e.End - pos;
                long tail = (pos + n) % alignment;
                if (n > tail) n -= tail;
                long statusEnd = pos + n;
                while (pos < statusEnd)
                {
                    long m = counted ? Math.Min(statusEnd - pos, Buffer) : statusEnd - pos;
                    pos += m;
                    if (!counted) continue;
                    total += m;
                    steps.Add((pos, m));
                }
            }
        }
        var ticks = new List<(long, float)>(steps.Count);
        long done = 0;
        foreach (var (end, length) in steps)
        {
            done += length;
            ticks.Add((end, (float)(100.0 * done / total)));
        }
        return ticks;
    }
}
