using System.CommandLine;
using System.Globalization;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Info;

namespace Qcow2Actors.Cli.Commands;

/// <summary>What <c>q2a measure</c> was asked, as typed.</summary>
internal sealed record MeasureRequest
{
    /// <summary><c>--size N</c>, as typed.</summary>
    public string? Size { get; init; }
    /// <summary>The source image, when measuring a conversion of it.</summary>
    public string? File { get; init; }
    /// <summary><c>-f</c>: the source's format.</summary>
    public string? Format { get; init; }
    /// <summary><c>-O</c>: raw (qemu-img's default) or qcow2.</summary>
    public string OutFormat { get; init; } = "raw";
    /// <summary>Every <c>-o</c> argument in order.</summary>
    public IReadOnlyList<string> Options { get; init; } = [];
    /// <summary><c>-l</c>: measure one of the source's snapshots.</summary>
    public string? Snapshot { get; init; }
    /// <summary><c>--output</c>.</summary>
    public string? Output { get; init; }
    /// <summary><c>-U</c>.</summary>
    public bool ForceShare { get; init; }
}

/// <summary>
/// <c>q2a measure [--output human|json] [-O raw|qcow2] [-o OPTIONS] (--size N | [-f FMT] [-l SNAPSHOT] [-U] FILE)</c>:
/// the file size a new image (or a conversion of FILE) needs, as qemu-img measure prints it:
/// "required size", "fully allocated size" and, for a qcow2 v3 target of a qcow2 v3 source,
/// "bitmaps size"; the same three numbers as JSON.
/// </summary>
internal static class MeasureCommand
{
    public static Command Create()
    {
        var output = new Option<string?>("--output") { Description = "human or json" };
        var outFormat = new Option<string>("-O") { Description = "target format: raw (the default) or qcow2", DefaultValueFactory = _ => "raw" };
        var options = new Option<string[]>("-o") { Description = "target format options, comma separated (as create takes them)" };
        var size = new Option<string?>("--size") { Description = "virtual size of a new image (instead of FILE); k, M, G, T, P, E suffixes" };
        var format = new Option<string?>("-f") { Description = "source format (qcow2 or raw); probed when absent" };
        var snapshot = new Option<string?>("-l") { Description = "measure a snapshot of the source: ID_OR_NAME, snapshot.id=ID or snapshot.name=NAME" };
        var forceShare = ForceShareOption.Create();
        var file = new Argument<string?>("filename") { Arity = ArgumentArity.ZeroOrOne, Description = "the image a conversion would copy" };
        var command = new Command("measure", "Size a new image, or the conversion of an existing one")
            { output, outFormat, options, size, format, snapshot, forceShare, file };
        var sources = Sources.SourceOptions.AddTo(command);
        command.SetAction((parse, ct) => CliRunner.RunAsync(() =>
        {
            var spec = parse.GetValue(file) is { } f ? sources.ResolveHostFile(parse, f, parse.GetValue(format), "measure") : null;
            return RunAsync(new MeasureRequest
        {
            Size = parse.GetValue(size),
            File = spec?.Path,
            Format = spec is null ? parse.GetValue(format) : spec.Format,
            OutFormat = parse.GetValue(outFormat)!,
            Options = parse.GetValue(options) ?? [],
            Snapshot = parse.GetValue(snapshot),
            Output = parse.GetValue(output),
            ForceShare = parse.GetValue(forceShare),
        }, Console.Out, ct);
        }));
        return command;
    }

    /// <summary>Measures and prints; the one-line errors are qemu-img's.</summary>
    public static async Task<int> RunAsync(MeasureRequest request, TextWriter stdout, CancellationToken ct)
    {
        if (request.Output is not (null or "human" or "json"))
            throw new CliException("--output must be used with human or json as argument.");
        bool json = request.Output == "json";
        if (request.File is null && request.Size is null)
            throw new CliException("Either --size N or one filename must be specified.");
        if (request.File is not null && request.Size is not null)
            throw new CliException("--size N cannot be used together with a filename.");
        ulong? size = null;
        if (request.Size is { } text)
        {
            if (QemuSize.TryParse(text, out var value) != QemuSizeError.None || value > long.MaxValue)
                throw new CliException("Invalid image size specified. You may use k, M, G, T, P or E suffixes for "
                    + "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
            size = value;
        }

        Qcow2Image? source = null;
        try
        {
            if (request.File is { } path)
            {
                source = await Qcow2Image.OpenAsync(path, new Qcow2OpenOptions
                {
                    Format = request.Format,
                    Snapshot = ConvertCommand.SnapshotSelector(request.Snapshot),
                    ForceShare = request.ForceShare,
                }, ct).ConfigureAwait(false);
            }
            if (request.OutFormat is not ("raw" or "qcow2"))
            {
                throw new CliException(CreateOptions.DescriptorsFor(request.OutFormat) is null && !KnownFormats.Contains(request.OutFormat)
                    ? $"Unknown file format '{request.OutFormat}'"
                    : $"Block driver '{request.OutFormat}' does not support size measurement");
            }
            var opts = CreateOptions.Parse(request.OutFormat, request.Options, imagePath: null);
            var (required, full, bitmaps) = request.OutFormat == "raw"
                ? MeasureRaw(source, size ?? opts.Number("size") ?? 0)
                : await MeasureQcow2Async(opts, source, (long)(size ?? 0), request, ct).ConfigureAwait(false);
            string result = json
                ? (bitmaps is { } b ? $"{{\n    \"bitmaps\": {b},\n" : "{\n")
                    + $"    \"required\": {required},\n    \"fully-allocated\": {full}\n}}\n"
                : $"required size: {required}\nfully allocated size: {full}\n" + (bitmaps is { } bh ? $"bitmaps size: {bh}\n" : "");
            await stdout.WriteAsync(result).ConfigureAwait(false);
            return 0;
        }
        finally
        {
            if (source is not null) await source.DisposeAsync().ConfigureAwait(false);
        }
    }

    // Formats qemu-img knows but cannot measure: named as such rather than as unknown.
    private static readonly HashSet<string> KnownFormats = new(StringComparer.Ordinal)
        { "vmdk", "vdi", "vhdx", "vpc", "qcow", "qed", "luks", "parallels", "bochs", "cloop", "dmg" };

    // qemu-img's raw_measure: a raw file is as big as the disk, allocated or not.
    private static (long, long, long?) MeasureRaw(Qcow2Image? source, ulong size)
    {
        long required = source is not null ? source.VirtualSize : (long)((size + 511) / 512 * 512);
        return (required, required, null);
    }

    private static async Task<(long, long, long?)> MeasureQcow2Async(CreateOptions opts, Qcow2Image? source, long size,
        MeasureRequest request, CancellationToken ct)
    {
        // Checked in qcow2_measure's order, with its words.
        bool extendedL2 = opts.Bool("extended_l2") ?? false;
        ulong clusterSizeOption = opts.Number("cluster_size") ?? 65536;
        if (clusterSizeOption is < 512 or > 2 * 1024 * 1024 || (clusterSizeOption & (clusterSizeOption - 1)) != 0)
            throw new CliException("Cluster size must be a power of two between 512 and 2048k");
        int clusterSize = (int)clusterSizeOption;
        if (extendedL2 && clusterSize < 16384)
            throw new CliException("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
        int version = opts.Text("compat") switch
        {
            null or "1.1" or "v3" => 3,
            "0.10" or "v2" => 2,
            var other => throw new CliException($"Invalid compatibility level: '{other}'"),
        };
        ulong refcountBits = opts.Number("refcount_bits") ?? 16;
        if (refcountBits is 0 or > 64 || (refcountBits & (refcountBits - 1)) != 0)
            throw new CliException("Refcount width must be a power of two and may not exceed 64 bits");
        if (version < 3 && refcountBits != 16)
            throw new CliException("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");
        string preallocation = opts.Text("preallocation") ?? "off";
        if (preallocation is not ("off" or "metadata" or "falloc" or "full"))
            throw new CliException($"invalid parameter value: {preallocation}");
        bool hasBacking = opts.Text("backing_file") is not null;

        long virtualSize = AlignUp(size, clusterSize);
        if (ImageMeasure.L1TooLarge(virtualSize, clusterSize, extendedL2))
            throw new CliException("The image size is too large (try using a larger cluster size)");

        long required = 0;
        long? bitmaps = null;
        if (source is not null)
        {
            long sourceSize = source.VirtualSize;
            virtualSize = AlignUp(sourceSize, clusterSize);
            if (hasBacking) required = virtualSize; // nothing known to be shared with a backing file: count it all
            else required = await AllocatedBytesAsync(source, clusterSize, ct).ConfigureAwait(false);
            if (version >= 3 && source.Info.Format == "qcow2" && source.Header is { Version: >= 3 })
            {
                var info = ImageInfo.ReadChain(request.File!, backingChain: false, request.ForceShare)[0];
                bitmaps = ImageMeasure.BitmapsSize(info.Bitmaps.Select(b => (b.Name, b.Granularity)), sourceSize, clusterSize);
            }
        }
        if (preallocation is "falloc" or "full") required = virtualSize;
        long full = ImageMeasure.FullyAllocated(virtualSize, clusterSize, (int)refcountBits, extendedL2);
        return (full - virtualSize + required, full, bitmaps);
    }

    /// <summary>
    /// Bytes of data clusters a copy of <paramref name="source"/> needs: every cluster touched by a run
    /// that is stored data (zero runs and holes need none), each run stretched to a cluster boundary.
    /// </summary>
    private static async Task<long> AllocatedBytesAsync(Qcow2Image source, int clusterSize, CancellationToken ct)
    {
        long required = 0, pos = 0;
        await foreach (var e in source.GetMapAsync(0, source.VirtualSize, ct).ConfigureAwait(false))
        {
            if (e.End <= pos) continue;
            long start = Math.Max(e.Start, pos);
            if (e.Zero || !e.Data || !e.Present)
            {
                pos = e.End;
                continue;
            }
            long end = AlignUp(e.End, clusterSize);
            required += start % clusterSize + (end - start);
            pos = end;
        }
        return required;
    }

    private static long AlignUp(long value, long alignment) => (value + alignment - 1) / alignment * alignment;
}
