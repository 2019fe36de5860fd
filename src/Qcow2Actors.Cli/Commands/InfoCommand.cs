using Qcow2Actors.Engine.Device;
using System.CommandLine;
using System.Globalization;
using System.Text;
using Qcow2Actors.Engine.Info;

namespace Qcow2Actors.Cli.Commands;

/// <summary><c>q2a info [-f qcow2] [--output human|json] [--backing-chain] IMG</c>, printing what qemu-img info prints.</summary>
internal static class InfoCommand
{
    public static Command Create()
    {
        var format = new Option<string>("-f", "--format") { Description = "image format (only qcow2)" };
        var output = new Option<string>("--output") { Description = "human or json", DefaultValueFactory = _ => "human" };
        var chain = new Option<bool>("--backing-chain") { Description = "also show every backing file" };
        var forceShare = ForceShareOption.Create();
        var file = new Argument<string>("filename") { Description = "the image: a path, nbd://..., nbd+unix://..., json:{...}, or with --image-opts key=value,..." };
        var command = new Command("info", "show the image's header, snapshots and format-specific information");
        var sources = Sources.SourceOptions.AddTo(command);
        command.Options.Add(format);
        command.Options.Add(output);
        command.Options.Add(chain);
        command.Options.Add(forceShare);
        command.Arguments.Add(file);
        command.SetAction((ParseResult parse, CancellationToken ct) => CliRunner.RunAsync(async () =>
        {
            var spec = sources.Resolve(parse, parse.GetValue(file)!, parse.GetValue(format));
            var path = spec.Path;
            var json = Formats.IsJson(parse.GetValue(output));
            IReadOnlyList<ImageInfo> infos;
            if (!spec.IsHostFile)
            {
                var read = await Sources.DeviceInfo.ReadAsync(spec, parse.GetValue(chain), parse.GetValue(forceShare), Console.Out, json, ct).ConfigureAwait(false);
                if (read is null) return 0;
                infos = read;
            }
            else
            {
                Formats.RequireQcow2(spec.Format);
                try
                {
                    infos = ImageInfo.ReadChain(path!, parse.GetValue(chain), parse.GetValue(forceShare));
                }
                catch (Exception e) when (e is not FileNotFoundException and not ImageLockException)
                {
                    throw new InvalidOperationException($"Could not open '{spec.Argument}': {e.Message}", e);
                }
            }
            if (json)
            {
                var text = parse.GetValue(chain)
                    ? Formats.JsonList(infos.Select(i => i.ToQemuJson()))
                    : infos[0].ToQemuJson().ToJson();
                StandardOutput.Write(text + "\n");
            }
            else
            {
                StandardOutput.Write(string.Join("\n", infos.Select(Human)));
            }
            return 0;
        }));
        return command;
    }

    /// <summary>The layout of qemu-img 7.2's bdrv_image_info_dump.</summary>
    private static string Human(ImageInfo i)
    {
        var sb = new StringBuilder();
        // Appends, not interpolation: a long in an interpolated append is a generic instance the JIT compiles on each run.
        sb.Append("image: ").Append(i.Filename).Append("\nfile format: qcow2\nvirtual size: ").Append(Formats.SizeToString(i.VirtualSize))
            .Append(" (").Append(i.VirtualSize.ToString(CultureInfo.InvariantCulture)).Append(" bytes)\n");
        var disk = i.ActualSizeAvailable ? Formats.SizeToString(i.ActualSize) : "unavailable";
        sb.Append("disk size: ").Append(disk).Append("\ncluster_size: ").Append(i.ClusterSize.ToString(CultureInfo.InvariantCulture)).Append('\n');
        if (i.DirtyFlag) sb.Append("cleanly shut down: no\n");
        if (i.BackingFilename is not null)
        {
            sb.Append("backing file: ").Append(i.BackingFilename);
            if (i.FullBackingFilename is null) sb.Append(" (cannot determine actual path)");
            else if (i.FullBackingFilename != i.BackingFilename) sb.Append(" (actual path: ").Append(i.FullBackingFilename).Append(')');
            sb.Append('\n');
            if (i.BackingFormat is not null) sb.Append("backing file format: ").Append(i.BackingFormat).Append('\n');
        }
        if (i.Snapshots.Count > 0)
        {
            sb.Append("Snapshot list:\n");
            sb.Append(CultureInfo.InvariantCulture, $"{"ID",-10}{"TAG",-17}{"VM SIZE",8}{"DATE",20}{"VM CLOCK",13}{"ICOUNT",11}\n");
            foreach (var s in i.Snapshots)
            {
                var date = DateTimeOffset.FromUnixTimeSeconds(s.DateSeconds).ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture);
                var secs = s.VmClockNanoseconds / 1_000_000_000;
                var clock = string.Create(CultureInfo.InvariantCulture, $"{secs / 3600:00}:{secs / 60 % 60:00}:{secs % 60:00}.{s.VmClockNanoseconds / 1_000_000 % 1000:000}");
                var icount = s.Icount == -1 ? "" : s.Icount.ToString(CultureInfo.InvariantCulture);
                sb.Append(CultureInfo.InvariantCulture, $"{s.Id,-9} {s.Name,-16} {Formats.SizeToString((long)s.VmStateSize),8}{date,20}{clock,13}{icount,11}\n");
            }
        }
        sb.Append("Format specific information:\n").Append(i.FormatSpecific().ToHuman(1));
        return sb.ToString();
    }
}

/// <summary>Option handling and number formatting shared by the qemu-img style verbs.</summary>
internal static class Formats
{
    public static void RequireQcow2(string? format)
    {
        if (format is not null && format != "qcow2")
            throw new NotSupportedException($"Unknown or unsupported image format '{format}': q2a handles only qcow2");
    }

    public static bool IsJson(string? output) => output switch
    {
        null or "human" => false,
        "json" => true,
        _ => throw new ArgumentException($"--output must be 'human' or 'json', not '{output}'"),
    };

    public static string JsonList(IEnumerable<QemuJsonObject> items)
    {
        var parts = items.Select(i => "    " + i.ToJson().Replace("\n", "\n    ", StringComparison.Ordinal));
        return "[\n" + string.Join(",\n", parts) + "\n]";
    }

    /// <summary>QEMU's size_to_str (<see cref="QemuSizeText"/>).</summary>
    public static string SizeToString(long value) => QemuSizeText.Format(value);
}
