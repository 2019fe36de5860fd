using Qcow2Actors.Cli.Commands;
using Qcow2Actors.Engine;

namespace Qcow2Actors.Cli.Sources;

/// <summary>
/// Opens <c>q2a io</c>'s target from an <see cref="ImageSpec"/>: host files as before; an NBD export
/// read-write (unless <c>-r</c>) as raw bytes through <see cref="NbdIoTarget"/>, or, when it holds a
/// qcow2 image, read-only through the engine (writing a qcow2 image over NBD is refused).
/// </summary>
internal static class IoSource
{
    /// <summary>The target to run the commands against.</summary>
    public static async Task<IIoTarget> OpenAsync(ImageSpec spec, bool readOnly, bool forceShare, CancellationToken ct)
    {
        if (spec.IsHostFile) return await Qcow2IoTarget.OpenAsync(spec.Path!, spec.Format, readOnly, ct, forceShare).ConfigureAwait(false);
        var client = await ImageSources.ConnectClientAsync(spec, readOnly, ct).ConfigureAwait(false);
        try
        {
            string format = spec.Format ?? "raw";
            if (spec.Format is null && client.Size >= 4)
            {
                var magic = new byte[4];
                await client.ReadAsync(0, magic, ct).ConfigureAwait(false);
                if (Format.Qcow2Header.HasMagic(magic)) format = "qcow2";
            }
            if (format != "qcow2") return new NbdIoTarget(client, readOnly);
            if (!readOnly)
                throw new CliException($"Could not open '{spec.Argument}': q2a opens a qcow2 image on an NBD export read-only (use -r)");
        }
        catch
        {
            await client.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        // The device owns the client from here; the image owns the device (and disposes it if the open fails).
#pragma warning disable CA2000 // The image owns the device (and disposes it when the open fails).
        var image = await Qcow2Image.OpenOnDeviceAsync(new Nbd.Client.NbdBlockDevice(client, spec.DisplayName), new Qcow2OpenOptions { Format = "qcow2" }, ct)
            .ConfigureAwait(false);
#pragma warning restore CA2000
        return Qcow2IoTarget.Over(image);
    }
}
