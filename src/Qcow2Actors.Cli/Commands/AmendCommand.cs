using System.CommandLine;
using Qcow2Actors.Engine.Amend;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a amend [-f qcow2] [-p] [-q] [-t CACHE] [--force] -o OPTIONS IMG</c>: qemu-img amend's options
/// (compat, refcount_bits, lazy_refcounts, data_file, data_file_raw), parsed with create's <c>-o</c>
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
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var path = parse.GetValue(image)!;
            var request = Parse(parse.GetValue(options) ?? [], parse.GetValue(format));
            if (request is null)
            {
                Console.Out.Write(HelpText);
                return 0;
            }
            var meter = parse.GetValue(progress) && !parse.GetValue(quiet) ? new ConvertCommand.ProgressMeter(100) : null;
            ImageAmender.Amend(path, request, meter is null ? null : p => meter.Advance((long)p));
            meter?.Finish();
            return 0;
        }));
        return command;
    }

    /// <summary>The amendment the <c>-o</c> arguments ask for, or null for <c>-o help</c>.</summary>
    /// <exception cref="CliException">No options, an option amend does not take, or a value it refuses.</exception>
    internal static AmendOptions? Parse(IReadOnlyList<string> optionArgs, string? format)
    {
        if (optionArgs.Count == 0) throw new CliException("Must specify options (-o)");
        if (format is not null and not "qcow2")
        {
            throw new CliException(CreateOptions.DescriptorsFor(format) is null
                ? $"Unknown file format '{format}'"
                : $"Format driver '{format}' does not support option amendment");
        }
        var opts = CreateOptions.Parse("qcow2", optionArgs, imagePath: null);
        if (opts.HelpRequested) return null;
        foreach (var name in CreateOnly)
            if (opts.Text(name) is not null) throw new CliException($"Invalid parameter '{name}': This option is only supported for image creation");
        if (opts.Text("size") is not null) throw new CliException("q2a amend does not change the size: use q2a resize");
        if (opts.Text("backing_file") is not null || opts.Text("backing_fmt") is not null)
            throw new CliException("q2a amend does not change the backing file: use q2a rebase -u");
        int? version = opts.Text("compat") switch
        {
            null => null,
            "0.10" or "v2" => 2,
            "1.1" or "v3" => 3,
            var other => throw new CliException($"Unknown compatibility level {other}"),
        };
        ulong? bits = opts.Number("refcount_bits");
        return new AmendOptions
        {
            Version = version,
            // Out of range: a width the amender refuses with qemu-img's words.
            RefcountBits = bits is null ? null : (int)Math.Min(bits.Value, int.MaxValue),
            LazyRefcounts = opts.Bool("lazy_refcounts"),
            DataFile = opts.Text("data_file"),
            DataFileRaw = opts.Bool("data_file_raw"),
        };
    }

    // qemu-img 7.2's "Amend options for 'qcow2'" less the encryption options q2a does not have.
    private const string HelpText =
        "Amend options for 'qcow2':\n"
        + "  compat=<str>           - Compatibility level (v2 [0.10] or v3 [1.1])\n"
        + "  data_file=<str>        - File name of an external data file\n"
        + "  data_file_raw=<bool (on/off)> - The external data file must stay valid as a raw image\n"
        + "  lazy_refcounts=<bool (on/off)> - Postpone refcount updates\n"
        + "  refcount_bits=<num>    - Width of a reference count entry in bits\n";
}
