using Qcow2Actors.Engine.Check;

namespace Qcow2Actors.Cli.Sources;

/// <summary>
/// <c>check</c> on an NBD image, read-only: a qcow2 image on the export is checked over the device;
/// a raw one (or <c>driver=nbd</c>) cannot be, and says so as qemu-img does, with its exit code 63.
/// </summary>
internal static class DeviceCheck
{
    /// <summary>qemu-img check's exit code when the format has no check (-ENOTSUP).</summary>
    public const int NotSupportedExitCode = 63;

    /// <summary>The check result, or null after printing qemu-img's "does not support checks" line.</summary>
    public static async Task<CheckResult?> RunAsync(ImageSpec spec, bool repair, TextWriter stderr, CancellationToken ct)
    {
        var device = await ImageSources.ConnectAsync(spec, readOnly: true, ct).ConfigureAwait(false);
        await using (device.ConfigureAwait(false))
        {
            string format = spec.FormatLabel ?? await ImageSources.FormatOfAsync(spec, device, ct).ConfigureAwait(false);
            if (format != "qcow2")
            {
                await stderr.WriteLineAsync("q2a: This image format does not support checks").ConfigureAwait(false);
                return null;
            }
            if (repair)
                throw new CliException($"Could not open '{spec.Argument}': q2a repairs only host files; an NBD export is checked read-only");
            try
            {
                return ImageChecker.Check(device, spec.DisplayName);
            }
            catch (Exception e) when (e is Format.Qcow2FormatException or InvalidDataException or NotSupportedException)
            {
                throw new CliException($"Could not open '{spec.Argument}': {e.Message}", e);
            }
        }
    }
}
