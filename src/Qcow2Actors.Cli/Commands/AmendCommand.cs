using System.CommandLine;
using Qcow2Actors.Engine.Amend;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a amend [--object ...] [--image-opts] [-f qcow2] [-p] [-q] [-t CACHE] [--force] -o OPTIONS IMG</c>: qemu-img amend's options
/// (compat, refcount_bits, lazy_refcounts, data_file, data_file_raw, size), parsed with create's <c>-o</c>
/// parser and refused with qemu-img's lines; the work is <see cref="ImageAmender"/>'s.
/// </summary>
internal static class AmendCommand
{
    // Options qemu-img create takes but amend refuses ("This option is only supported for image creation").
    private static readonly string[] CreateOnly = ["cluster_size", "extended_l2", "preallocation", "compression_type", "nocow", "extent_size_hint"];

    public static Command Create()
    {
        var options = new Option<string[]>("-o") { Description = "format options to change, comma separated (-o help lists them)" };
        var format = new Option<string?>("-f") { Description = "image format (qcow2)" };
        var progress = new Option<bool>("-p") { Description = "show progress" };
        var quiet = new Option<bool>("-q") { Description = "quiet: no progress" };
        var cache = new Option<string?>("-t") { Description = "cache mode (accepted for qemu-img compatibility; amend writes through and flushes)" };
        var force = new Option<bool>("--force") { Description = "accepted for qemu-img compatibility (it concerns encryption, which q2a does not support)" };
        var image = new Argument<string>("filename");
        var command = new Command("amend", "Change the format options of an existing qcow2 image")
            { options, format, progress, quiet, cache, force, image };
        var sources = Sources.SourceOptions.AddTo(command);
        command.SetAction(parse => CliRunner.RunAsync(async () =>
        {
            var optionArgs = parse.GetValue(options) ?? [];
            if (optionArgs.Length == 0) throw new CliException("Must specify options (-o)");
            var spec = sources.ResolveHostFile(parse, parse.GetValue(image)!, parse.GetValue(format), "amend");
            var path = spec.Path!;
            // qemu-img's -p: its option parser refuses before the progress starts (only the closing newline
            // is printed); the driver's refusals and the work come between 0 and 100.
            var meter = parse.GetValue(progress) && !parse.GetValue(quiet) ? new ProgressMeter(100) : null;
            Request? request;
            try
            {
                request = Parse(optionArgs, spec.Format);
            }
            catch (CliException ex) when (meter is not null)
            {
                if (RefusedByTheDriver(ex.Message))
                {
                    meter.Print(0);
                    meter.Print(100);
                }
                meter.End();
                throw;
            }
            if (request is null)
            {
                Console.Out.Write(HelpText);
                return 0;
            }
            meter?.Print(0);
            try
            {
                // size= is checked before anything is written, and applied last (after compat, refcounts, ...).
                // size=0 is "no size given" to qemu-img amend too.
                long? size = request.Size is { } s and > 0 ? checked((long)s) : null;
                if (size is not null && size % 512 != 0) throw new CliException("The new size must be a multiple of 512");
                if (request.Options is not { Version: null, RefcountBits: null, LazyRefcounts: null, DataFile: null, DataFileRaw: null } || size is null)
                    ImageAmender.Amend(path, request.Options, meter is null ? null : Steps(meter, request.Options));
                if (size is long wanted)
                {
                    long current = Engine.Info.ImageInfo.ReadChain(path, backingChain: false)[0].VirtualSize;
                    if (wanted != current) await ResizeCommand.ResizeQcow2Async(path, current, wanted).ConfigureAwait(false);
                }
            }
            catch when (meter is not null)
            {
                meter.Print(100);
                meter.End();
                throw;
            }
            meter?.Finish();
            return 0;
        }));
        return command;
    }

    // qemu-img's driver reports steps only while it rewrites refcounts or downgrades (once more at 0,
    // and at 100); a plain header change shows only the verb's own 0 and 100.
    private static Action<double> Steps(ProgressMeter meter, AmendOptions options)
    {
        bool reports = options.Version == 2 || options.RefcountBits is not null;
        bool zeroShown = false;
        return p =>
        {
            if (!reports) return;
            if (p <= 0)
            {
                if (zeroShown || options.RefcountBits is null) return;
                zeroShown = true;
            }
            meter.Print(p);
        };
    }

    // The refusals qemu-img's qcow2 driver makes (after its progress line started), not its option parser.
    private static bool RefusedByTheDriver(string message) =>
        message.StartsWith("Unknown compatibility level", StringComparison.Ordinal)
        || message.StartsWith("Cannot amend the backing file", StringComparison.Ordinal);

    /// <summary>What <c>-o</c> asks for: the format changes, and the new virtual size (<c>size=</c>) or null.</summary>
    internal sealed record Request(AmendOptions Options, ulong? Size);

    /// <summary>The amendment the <c>-o</c> arguments ask for, or null for <c>-o help</c>.</summary>
    /// <exception cref="CliException">No options, an option amend does not take, or a value it refuses.</exception>
    internal static Request? Parse(IReadOnlyList<string> optionArgs, string? format)
    {
        if (optionArgs.Count == 0) throw new CliException("Must specify options (-o)");
        if (format is not null and not "qcow2")
        {
            throw new CliException(CreateOptions.DescriptorsFor(format) is null
                ? $"Unknown file format '{format}'"
                : $"Format driver '{format}' does not support option amendment");
        }
        // create's parser refuses encryption as q2a's own gap; amend refuses it as qemu-img does.
        if (optionArgs.SelectMany(a => a.Split(',')).Any(i => i is "encryption" || i.StartsWith("encryption=", StringComparison.Ordinal)))
            throw new CliException("Invalid parameter 'encryption': This option is only supported for image creation");
        var opts = CreateOptions.Parse("qcow2", optionArgs, imagePath: null);
        if (opts.HelpRequested) return null;
        foreach (var name in CreateOnly)
            if (opts.Text(name) is not null) throw new CliException($"Invalid parameter '{name}': This option is only supported for image creation");
        if (opts.Text("backing_file") is not null || opts.Text("backing_fmt") is not null)
            throw new CliException("Cannot amend the backing file: You can use 'qemu-img rebase' instead.");
        ulong? size = opts.Text("size") is null ? null : opts.Number("size");
        int? version = opts.Text("compat") switch
        {
            null => null,
            "0.10" or "v2" => 2,
            "1.1" or "v3" => 3,
            var other => throw new CliException($"Unknown compatibility level {other}"),
        };
        ulong? bits = opts.Number("refcount_bits");
        return new Request(new AmendOptions
        {
            Version = version,
            // Out of range: a width the amender refuses with qemu-img's words.
            RefcountBits = bits is null ? null : (int)Math.Min(bits.Value, int.MaxValue),
            LazyRefcounts = opts.Bool("lazy_refcounts"),
            DataFile = opts.Text("data_file"),
            DataFileRaw = opts.Bool("data_file_raw"),
        }, size);
    }

    // qemu-img 7.2's "Amend options for 'qcow2'" less the encryption options q2a does not have.
    private const string HelpText =
        "Amend options for 'qcow2':\n"
        + "  compat=<str>           - Compatibility level (v2 [0.10] or v3 [1.1])\n"
        + "  data_file=<str>        - File name of an external data file\n"
        + "  data_file_raw=<bool (on/off)> - The external data file must stay valid as a raw image\n"
        + "  lazy_refcounts=<bool (on/off)> - Postpone refcount updates\n"
        + "  refcount_bits=<num>    - Width of a reference count entry in bits\n"
        + "  size=<size>            - Virtual disk size\n";
}
