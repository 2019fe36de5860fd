using System.Globalization;
using Qcow2Actors.Cli.Commands;
using Qcow2Actors.Engine.Info;

namespace Qcow2Actors.Cli.Sources;

/// <summary>
/// <c>info</c> on an NBD image: a qcow2 image on the export is read by the engine's info reader over
/// the device (no host stat: "disk size: unavailable"); anything else is the export's raw bytes, shown
/// as qemu-img shows a raw (or, with <c>driver=nbd</c>, an "nbd") image: name, format and size only.
/// </summary>
internal static class DeviceInfo
{
    /// <summary>The infos to print: the image, and with <paramref name="backingChain"/> its backing files (which must be named absolutely).</summary>
    public static async Task<IReadOnlyList<ImageInfo>?> ReadAsync(ImageSpec spec, bool backingChain, bool forceShare, TextWriter stdout, bool json, CancellationToken ct)
    {
        var device = await ImageSources.ConnectAsync(spec, readOnly: true, ct).ConfigureAwait(false);
        await using (device.ConfigureAwait(false))
        {
            string format = await ImageSources.FormatOfAsync(spec, device, ct).ConfigureAwait(false);
            if (format != "qcow2")
            {
                await stdout.WriteAsync(json ? RawJson(spec, device.Length, backingChain) : RawHuman(spec, device.Length)).ConfigureAwait(false);
                return null;
            }
            ImageInfo top;
            try
            {
                top = ImageInfo.ReadOnDevice(device);
            }
            catch (Exception e) when (e is Format.Qcow2FormatException or InvalidDataException or NotSupportedException)
            {
                throw new CliException($"Could not open '{spec.Argument}': {e.Message}", e);
            }
            if (!backingChain || top.BackingFilename is null) return [top];
            if (top.FullBackingFilename is null)
                throw new CliException($"Could not determine absolute backing filename, but backing filename '{top.BackingFilename}' present");
            return [top, .. ImageInfo.ReadChain(top.FullBackingFilename, backingChain: true, forceShare)];
        }
    }

    private static long Size(long length) => (length + 511) & ~511L;

    private static string Label(ImageSpec spec) => spec.FormatLabel ?? "raw";

    private static string RawJson(ImageSpec spec, long length, bool list)
    {
        var o = new QemuJsonObject().Add("virtual-size", Size(length)).Add("filename", spec.DisplayName).Add("format", Label(spec));
        return (list ? Formats.JsonList([o]) : o.ToJson()) + "\n";
    }

    private static string RawHuman(ImageSpec spec, long length) => string.Create(CultureInfo.InvariantCulture,
        $"image: {spec.DisplayName}\nfile format: {Label(spec)}\nvirtual size: {Formats.SizeToString(Size(length))} ({Size(length)} bytes)\ndisk size: unavailable\n");
}
