using System.CommandLine;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Amend;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Info;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a resize [--object ...] [--image-opts] [-f qcow2|raw] [--preallocation=MODE] [--shrink] [-q] IMG [+|-]SIZE</c>:
/// grows a qcow2 image (and its L1 table) as qemu-img resize does, or with <c>--shrink</c> shrinks it,
/// discarding what lies past the new end (<see cref="ImageShrinker"/>); without <c>--shrink</c> a
/// smaller size is refused as qemu-img refuses it. A raw image (<c>-f raw</c>) is the file's length;
/// its growth may be preallocated (falloc, full: the new bytes are allocated zeros).
/// </summary>
internal static class ResizeCommand
{
    private const int ZeroChunk = 1 << 20;

    public static Command Create()
    {
        var format = new Option<string?>("-f") { Description = "image format: qcow2 (probed) or raw" };
        var shrink = new Option<bool>("--shrink") { Description = "allow shrinking: everything past the new end is discarded" };
        var prealloc = new Option<string?>("--preallocation") { Description = "off (default); for raw images also falloc or full (the new space allocated as zeros)" };
        var quiet = new Option<bool>("-q") { Description = "quiet" };
        var image = new Argument<string>("IMG");
        var size = new Argument<string>("SIZE") { Description = "new size, or +SIZE to grow by SIZE (k/M/G/T suffixes)" };
        var command = new Command("resize", "change the virtual size of an image") { format, shrink, prealloc, quiet, image, size };
        var sources = Sources.SourceOptions.AddTo(command);
        command.SetAction(parse => CliRunner.RunAsync(async () =>
        {
            var spec = sources.ResolveHostFile(parse, parse.GetValue(image)!, parse.GetValue(format), "resize");
            var path = spec.Path!;
            var text = parse.GetValue(size)!;
            var mode = parse.GetValue(prealloc);
            if (mode is not (null or "off" or "metadata" or "falloc" or "full")) throw new CliException($"Invalid preallocation mode '{mode}'");
            bool relative = text.StartsWith('+') || text.StartsWith('-');
            if (QemuSize.TryParse(relative ? text[1..] : text, out var value) != QemuSizeError.None || value > long.MaxValue)
                throw new CliException("Parameter 'size' expects a non-negative number below 2^64 Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta- and exabytes, respectively.");
            bool raw = (spec.Format ?? ProbeFormat(path)) == "raw";
            if (spec.Format is { } f && f is not ("qcow2" or "raw")) throw new CliException($"Unknown file format '{f}'");
            if (spec.Format == "qcow2" && ProbeFormat(path) != "qcow2") throw new CliException($"Could not open '{spec.Argument}': Image is not in qcow2 format");
            long current = raw ? new FileInfo(path).Length : ImageInfo.ReadChain(path, backingChain: false)[0].VirtualSize;
            long wanted = !relative ? (long)value : text[0] == '+' ? current + (long)value : current - (long)value;
            if (wanted <= 0) throw new CliException("New image size must be positive");
            if (wanted < current && !parse.GetValue(shrink))
                throw new CliException("Use the --shrink option to perform a shrink operation.");
            if (mode is not (null or "off") && wanted < current) throw new CliException("Preallocation can only be used for growing images");
            if (raw)
            {
                if (mode == "metadata") throw new CliException("Unsupported preallocation mode: metadata");
                ResizeRaw(path, current, wanted, zeroFill: mode is "falloc" or "full");
            }
            else
            {
                // qemu allocates the new qcow2 clusters up front; q2a's engine allocates on first write only.
                if (mode is not (null or "off"))
                    throw new CliException($"Preallocation mode '{mode}' is not supported by q2a resize for qcow2 images (create the image with -o preallocation={mode} instead)");
                await ResizeQcow2Async(path, current, wanted).ConfigureAwait(false);
            }
            if (!parse.GetValue(quiet)) Console.WriteLine("Image resized.");
            return 0;
        }));
        return command;
    }

    // qemu-img probes the format by the qcow2 magic; anything else is raw.
    private static string ProbeFormat(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Could not open '{path}': No such file or directory", path);
        return FormatProbe.IsQcow2(path) ? "qcow2" : "raw";
    }

    /// <summary>
    /// Sets a raw image's length under the image lock's writer claim (as qemu-img's raw driver takes
    /// "resize"); with <paramref name="zeroFill"/> the new bytes are written as zeros, so they are allocated.
    /// </summary>
    private static void ResizeRaw(string path, long current, long wanted, bool zeroFill)
    {
        using var imageLock = ImageLock.Acquire(path, LockMode.Writer);
        using var file = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        RandomAccess.SetLength(file, wanted);
        if (zeroFill)
        {
            var zeros = new byte[ZeroChunk];
            for (long pos = current; pos < wanted; pos += ZeroChunk)
                RandomAccess.Write(file, zeros.AsSpan(0, (int)Math.Min(ZeroChunk, wanted - pos)), pos);
        }
        RandomAccess.FlushToDisk(file);
    }

    /// <summary>
    /// Resizes the closed qcow2 image at <paramref name="path"/> from <paramref name="current"/> to
    /// <paramref name="wanted"/> bytes: a shrink discards past the new end (<see cref="ImageShrinker"/>),
    /// a growth goes through the engine (the L1 table grows as needed). Shared with amend's size=.
    /// </summary>
    internal static async Task ResizeQcow2Async(string path, long current, long wanted)
    {
        if (wanted < current)
        {
            ImageShrinker.Shrink(path, wanted);
            return;
        }
        await using var host = ImageHost.Create();
        await using var img = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false });
        if (wanted % 512 != 0) throw new CliException("The new size must be a multiple of 512");
        await img.ResizeAsync(wanted);
    }
}
