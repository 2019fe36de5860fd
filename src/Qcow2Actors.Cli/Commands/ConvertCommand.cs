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
        var targetImageOpts = new Option<bool>("--target-image-opts")
        {
            Description = "the output name is key=value options (driver=qcow2|raw,file.filename=PATH) of an existing target; needs -n",
        };
        var rate = new Option<string?>("-r") { Description = "rate limit in bytes per second (suffixes k, M, G...; 0: none)" };
        var source = new Argument<string>("filename") { Description = "source image" };
        // qemu-img convert SRC [SRC2 ...] DST: several sources are concatenated, the last name is the target.
        var rest = new Argument<string[]>("filename2... output_filename")
        {
            Description = "further source images (concatenated after the first), then the target file",
            Arity = ArgumentArity.OneOrMore,
        };
        var command = new Command("convert", "Convert an image (or one of its snapshots) to a raw or qcow2 image")
        {
            format, outFormat, snapshot, progress, quiet, compress, options, backing, backingFormat, forceShare,
            noCreate, sparse, outOfOrder, parallel, cache, sourceCache, targetIsZero, salvage, copyOffload, rate, targetImageOpts, source, rest,
        };
        var sources = Sources.SourceOptions.AddTo(command);
        command.SetAction((parse, ct) => CliRunner.RunAsync(() =>
        {
            var sparseText = parse.GetValue(sparse);
            var names = parse.GetValue(rest)!;
            var (targetPath, targetFormat) = parse.GetValue(targetImageOpts)
                ? TargetFromOptions(names[^1], parse.GetValue(noCreate), parse.GetResult(outFormat) is { Implicit: false })
                : (names[^1], parse.GetValue(outFormat)!);
            return RunAsync(new ConvertRequest(parse.GetValue(source)!, targetPath)
            {
                MoreSources = names[..^1],
                MoreSourceSpecs = [.. names[..^1].Select(n => sources.Resolve(parse, n, parse.GetValue(format)))],
                Format = parse.GetValue(format),
                OutFormat = targetFormat,
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
        ConvertBitmaps.Attach(command, source, p => p.GetValue(rest)![^1], p => p.GetValue(rest)!.Length > 1, format, outFormat, options);
        return command;
    }

    /// <summary>
    /// --target-image-opts: the output argument names an existing target by options (qemu-img allows it
    /// only with -n, and takes the format from driver=, probing when it is absent).
    /// </summary>
    internal static (string Path, string Format) TargetFromOptions(string argument, bool noCreate, bool formatGiven)
    {
        if (!noCreate) throw new CliException("--target-image-opts requires use of -n flag");
        if (formatGiven) throw new CliException("--image-opts and --format are mutually exclusive");
        var spec = Sources.ImageSpec.Resolve(argument, imageOpts: true, format: null, Sources.SourceObjects.Empty);
        if (!spec.IsHostFile || spec.Path is not { } path)
            throw new CliException($"Could not open '{argument}': q2a convert writes host files only, not an NBD export");
        if (!File.Exists(path)) throw new CliException($"Could not open '{argument}': Could not open '{path}': No such file or directory");
        if (spec.Format is { } format)
        {
            if (format is not ("raw" or "qcow2")) throw new CliException($"Unknown driver '{format}'");
            return (path, format);
        }
        Span<byte> magic = stackalloc byte[4];
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        int n = RandomAccess.Read(handle, magic, 0);
        return (path, Qcow2Actors.Format.Qcow2Header.HasMagic(magic[..n]) ? "qcow2" : "raw");
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

        foreach (var name in request.MoreSources.Prepend(request.Source))
            if (string.Equals(Path.GetFullPath(name), Path.GetFullPath(request.Target), StringComparison.Ordinal))
                throw new ArgumentException($"'{request.Target}' is the source image: converting onto itself would destroy it");
        await using var src = await Sources.ImageSources.OpenReadOnlyAsync(request.SourceSpec ?? Sources.ImageSpec.Resolve(request.Source, false, request.Format, Sources.SourceObjects.Empty),
            request.ForceShare, SnapshotSelector(request.Snapshot), ct, request.SourceCache).ConfigureAwait(false);
        var more = new List<Qcow2Image>();
        try
        {
            for (int i = 0; i < request.MoreSources.Count; i++)
            {
                var spec = request.MoreSourceSpecs?[i] ?? Sources.ImageSpec.Resolve(request.MoreSources[i], false, request.Format, Sources.SourceObjects.Empty);
                more.Add(await Sources.ImageSources.OpenReadOnlyAsync(spec, request.ForceShare, snapshot: null, ct, request.SourceCache).ConfigureAwait(false));
            }
            return await ConvertAsync(request, targetOptions, src, more, ct).ConfigureAwait(false);
        }
        finally
        {
            foreach (var image in more) await image.DisposeAsync().ConfigureAwait(false);
        }
    }

    // The copy itself: each source (several are concatenated) through its own copier into its slice of the target.
    private static async Task<int> ConvertAsync(ConvertRequest request, CreateOptions? targetOptions, Qcow2Image src, List<Qcow2Image> more, CancellationToken ct)
    {
        // qemu-img convert -l keeps the active image's size (it swaps in the snapshot's L1 only):
        // match it, zeros past the snapshot's own end, cut at the active size.
        long firstSize = request.Snapshot is not null && src.Header is { } active ? active.Size : src.VirtualSize;
        var parts = new List<(Qcow2Image Image, long Base, long Size, long ContentEnd)> { (src, 0, firstSize, Math.Min(firstSize, src.VirtualSize)) };
        long size = firstSize;
        foreach (var image in more)
        {
            parts.Add((image, size, image.VirtualSize, image.VirtualSize));
            size += image.VirtualSize;
        }
        bool hasBacking = targetOptions?.Text("backing_file") is not null || (request.NoCreate && request.BackingFile is not null);
        var target = await OpenTargetAsync(request, targetOptions, size, ct).ConfigureAwait(false);
        await using (target.ConfigureAwait(false))
        {
            var meter = request.Progress ? new ProgressMeter(size) : null;
            meter?.Print(0);
            if (meter is not null)
            {
                var maps = new List<(IReadOnlyList<ImageExtent> Extents, long Alignment, long Base)>();
                foreach (var part in parts)
                {
                    var extents = new List<ImageExtent>();
                    await foreach (var e in part.Image.GetMapAsync(0, part.ContentEnd, ct).ConfigureAwait(false)) extents.Add(e);
                    maps.Add((extents, part.Image.Info.ClusterSize ?? 512, part.Base));
                }
                meter.Schedule(ProgressTicks(maps, countZeros: request.SparseSize == 0, skipBelowTop: hasBacking,
                    compressedCluster: request.Compress ? target.ClusterSize : 0));
            }
            foreach (var part in parts)
            {
                var plan = new ConvertPlan(part.Size, part.ContentEnd)
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
                if (meter is not null) meter.Offset = part.Base;
                // The slice leaves the target open (it is disposed after the last source).
                var slice = new ConvertTargetSlice(target, part.Base);
                await using (slice.ConfigureAwait(false))
                    await new ConvertCopier(part.Image, slice, plan, meter, ct).RunAsync().ConfigureAwait(false);
            }
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
    internal static List<(long End, float Value)> ProgressTicks(IReadOnlyList<(IReadOnlyList<ImageExtent> Extents, long Alignment, long Base)> sources,
        bool countZeros, bool skipBelowTop, long compressedCluster = 0)
    {
        if (compressedCluster > 0) return Ticks(CompressedSteps(sources, countZeros, skipBelowTop, compressedCluster));
        const long Buffer = 2 * 1024 * 1024;
        var steps = new List<(long End, long Length)>();
        foreach (var (extents, alignment, offset) in sources)
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
                    if (counted) steps.Add((offset + pos, m));
                }
            }
        }
        return Ticks(steps);
    }

    // A compressed copy: every step is whole target clusters (a run shorter than one is taken as data), one cluster per write.
    private static List<(long End, long Length)> CompressedSteps(IReadOnlyList<(IReadOnlyList<ImageExtent> Extents, long Alignment, long Base)> sources,
        bool countZeros, bool skipBelowTop, long cluster)
    {
        var runs = new List<(long Start, long End, bool Counted, long Alignment, long Base)>();
        foreach (var (extents, alignment, offset) in sources)
            foreach (var e in extents)
            {
                bool below = skipBelowTop && e.Depth > 0;
                runs.Add((offset + e.Start, offset + e.End, !below && (!e.Zero || countZeros), alignment, offset));
            }
        long size = runs.Count == 0 ? 0 : runs[^1].End;
        var steps = new List<(long End, long Length)>();
        int at = 0;
        for (long pos = 0; pos < size;)
        {
            while (runs[at].End <= pos) at++;
            var run = runs[at];
            long n = run.End - pos;
            long tail = (pos - run.Base + n) % run.Alignment;
            if (n > tail) n -= tail;
            bool counted = run.Counted;
            if (n < cluster)
            {
                n = Math.Min(cluster, size - pos);
                counted = true;
            }
            else n -= n % cluster;
            if (!counted)
            {
                pos += n;
                continue;
            }
            for (long end = pos + n; pos < end;)
            {
                long m = Math.Min(cluster, end - pos);
                pos += m;
                steps.Add((pos, m));
            }
        }
        return steps;
    }

    private static List<(long End, float Value)> Ticks(List<(long End, long Length)> steps)
    {
        long total = steps.Sum(s => s.Length);
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
