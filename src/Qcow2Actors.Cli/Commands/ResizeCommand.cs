using System.CommandLine;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Amend;
using Qcow2Actors.Engine.Info;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a resize [-f qcow2] [--shrink] [-q] IMG [+|-]SIZE</c>: grows a qcow2 image (and its L1 table) as
/// qemu-img resize does, or with <c>--shrink</c> shrinks it, discarding what lies past the new end
/// (<see cref="ImageShrinker"/>); without <c>--shrink</c> a smaller size is refused as qemu-img refuses it.
/// </summary>
internal static class ResizeCommand
{
    public static Command Create()
    {
        var format = new Option<string?>("-f") { Description = "image format (qcow2)" };
        var shrink = new Option<bool>("--shrink") { Description = "allow shrinking: everything past the new end is discarded" };
        var quiet = new Option<bool>("-q") { Description = "quiet" };
        var image = new Argument<string>("IMG");
        var size = new Argument<string>("SIZE") { Description = "new size, or +SIZE to grow by SIZE (k/M/G/T suffixes)" };
        var command = new Command("resize", "change the virtual size of an image") { format, shrink, quiet, image, size };
        command.SetAction(parse => CliRunner.RunAsync(async () =>
        {
            var path = parse.GetValue(image)!;
            var text = parse.GetValue(size)!;
            if (parse.GetValue(format) is { } f && f != "qcow2") throw new CliException($"resize supports only qcow2 images, not '{f}'");
            bool relative = text.StartsWith('+') || text.StartsWith('-');
            if (QemuSize.TryParse(relative ? text[1..] : text, out var value) != QemuSizeError.None || value > long.MaxValue)
                throw new CliException("Invalid image size specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
            long current = ImageInfo.ReadChain(path, backingChain: false)[0].VirtualSize;
            long wanted = !relative ? (long)value : text[0] == '+' ? current + (long)value : current - (long)value;
            if (wanted <= 0) throw new CliException("New image size must be positive");
            if (wanted < current)
            {
                if (!parse.GetValue(shrink)) throw new CliException("Use the --shrink option to perform a shrink operation.");
                ImageShrinker.Shrink(path, wanted);
                if (!parse.GetValue(quiet)) Console.WriteLine("Image resized.");
                return 0;
            }
            await using var host = ImageHost.Create();
            await using var img = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false });
            if (wanted % 512 != 0) throw new CliException("The new size must be a multiple of 512");
            await img.ResizeAsync(wanted);
            await img.DisposeAsync();
            if (!parse.GetValue(quiet)) Console.WriteLine("Image resized.");
            return 0;
        }));
        return command;
    }
}
