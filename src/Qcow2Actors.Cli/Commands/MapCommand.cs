using System.CommandLine;
using System.Globalization;
using System.Text;
using Qcow2Actors.Engine;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a map [-f FMT] [--output human|json] IMG</c>: qemu-img map, byte for byte in both output
/// formats (qemu-img 7.2: fields start, length, depth, present, zero, data, offset).
/// </summary>
internal static class MapCommand
{
    public static Command Create()
    {
        var format = new Option<string?>("-f", "--format") { Description = "image format (qcow2 or raw); probed when absent" };
        var output = new Option<string>("--output") { Description = "human or json", DefaultValueFactory = _ => "human" };
        output.AcceptOnlyFromAmong("human", "json");
        var forceShare = ForceShareOption.Create();
        var image = new Argument<string>("filename") { Description = "the image" };
        var command = new Command("map", "Dump the metadata of an image: which guest ranges are stored where") { format, output, forceShare, image };
        var sources = Sources.SourceOptions.AddTo(command);
        command.SetAction((parse, ct) => CliRunner.RunAsync(() =>
            RunAsync(sources.Resolve(parse, parse.GetValue(image)!, parse.GetValue(format)), parse.GetValue(output)!, Console.Out, ct, parse.GetValue(forceShare))));
        return command;
    }

    public static Task<int> RunAsync(string path, string? format, string output, TextWriter stdout, CancellationToken ct, bool forceShare = false) =>
        RunAsync(Sources.ImageSpec.Resolve(path, false, format, Sources.SourceObjects.Empty), output, stdout, ct, forceShare);

    public static async Task<int> RunAsync(Sources.ImageSpec spec, string output, TextWriter stdout, CancellationToken ct, bool forceShare = false)
    {
        await using var img = await Sources.ImageSources.OpenReadOnlyAsync(spec, forceShare, snapshot: null, ct).ConfigureAwait(false);
        var text = new StringBuilder();
        bool json = output == "json";
        if (json) text.Append('[');
        else text.Append(CultureInfo.InvariantCulture, $"{"Offset",-16}{"Length",-16}{"Mapped to",-16}File\n");
        bool first = true;
        await foreach (var e in img.GetMapAsync(0, img.VirtualSize, ct).ConfigureAwait(false))
        {
            if (json)
            {
                if (!first) text.Append(",\n");
                text.Append(CultureInfo.InvariantCulture,
                    $"{{ \"start\": {e.Start}, \"length\": {e.Length}, \"depth\": {e.Depth}, \"present\": {Bool(e.Present)}, \"zero\": {Bool(e.Zero)}, \"data\": {Bool(e.Data)}");
                if (e.Offset is { } off) text.Append(CultureInfo.InvariantCulture, $", \"offset\": {off}");
                text.Append('}');
            }
            else
            {
                if (e.Data && e.Offset is null)
                    throw new InvalidOperationException("File contains external, encrypted or compressed clusters.");
                if (e.Data && !e.Zero)
                    text.Append(CultureInfo.InvariantCulture, $"{Hex(e.Start),-16}{Hex(e.Length),-16}{Hex(e.Offset!.Value),-16}{e.FileName}\n");
            }
            first = false;
        }
        if (json) text.Append("]\n");
        await stdout.WriteAsync(text.ToString()).ConfigureAwait(false);
        await stdout.FlushAsync(ct).ConfigureAwait(false);
        return 0;
    }

    private static string Bool(bool b) => b ? "true" : "false";

    // printf's %#x: "0" for zero, else 0x-prefixed lower-case hex.
    private static string Hex(long v) => v == 0 ? "0" : "0x" + v.ToString("x", CultureInfo.InvariantCulture);
}
