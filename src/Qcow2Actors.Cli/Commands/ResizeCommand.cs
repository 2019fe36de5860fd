using System.CommandLine;
using Qcow2Actors.Engine;

namespace Qcow2Actors.Cli.Commands;

/// <summary><c>q2a resize [-f qcow2] [--shrink] [-q] IMG [+]SIZE</c>: grows a qcow2 image (and its L1 table) as qemu-img resize does.</summary>
internal static class ResizeCommand
{
    public static Command Create()
    {
        var format = new Option<string?>("-f") { Description = "image format (qcow2)" };
        var shrink = new Option<bool>("--shrink") { Description = "allow shrinking (refused: q2a only grows images)" };
        var quiet = new Option<bool>("-q") { Description = "quiet" };
        var image = new Argument<string>("IMG");
        var size = new Argument<string>("SIZE") { Description = "new size, or +SIZE to grow by SIZE (k/M/G/T suffixes)" };
        var command = new Command("resize", "change the virtual size of an image (grow)") { format, shrink, quiet, image, size };
        command.SetAction(parse => CliRunner.RunAsync(async () =>
        {
            var path = parse.GetValue(image)!;
            var text = parse.GetValue(size)!;
            if (parse.GetValue(format) is { } f && f != "qcow2") throw new CliException($"resize supports only qcow2 images, not '{f}'");
            bool relative = text.StartsWith('+') || text.StartsWith('-');
            if (text.StartsWith('-')) throw new CliException("Shrinking is not supported by q2a resize");
            if (QemuSize.TryParse(relative ? text[1..] : text, out var value) != QemuSizeError.None)
                throw new CliException("Invalid image size specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
            await using var host = ImageHost.Create();
            await using var img = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false });
            long target = relative ? img.VirtualSize + (long)value : (long)value;
            if (target < img.VirtualSize) throw new CliException("Shrinking is not supported by q2a resize");
            await img.ResizeAsync(target);
            await img.DisposeAsync();
            if (!parse.GetValue(quiet)) Console.WriteLine("Image resized.");
            return 0;
        }));
        return command;
    }
}
