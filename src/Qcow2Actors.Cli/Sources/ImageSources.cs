using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Format;
using Qcow2Actors.Nbd.Client;

namespace Qcow2Actors.Cli.Sources;

/// <summary>
/// Opens what an <see cref="ImageSpec"/> names: a host file through <see cref="Qcow2Image.OpenAsync"/>
/// as before, an NBD export through the NBD client as a device (no host lock or stat), so every verb
/// reads both the same way. Failures to reach an export are one line, "Could not open 'ARG': ...".
/// </summary>
internal static class ImageSources
{
    /// <summary>Opens the image read-only (<paramref name="forceShare"/> is -U; it only matters for host files, as NBD takes no locks).</summary>
    public static async Task<Qcow2Image> OpenReadOnlyAsync(ImageSpec spec, bool forceShare, string? snapshot, CancellationToken ct,
        Qcow2Actors.Engine.Device.CacheMode cache = Qcow2Actors.Engine.Device.CacheMode.Writeback)
    {
        // The cache mode (-T) applies to host files only: an export's caching is the server's.
        if (spec.IsHostFile)
            return await Qcow2Image.OpenAsync(spec.Path!, new Qcow2OpenOptions { Format = spec.Format, ForceShare = forceShare, Snapshot = snapshot, Cache = cache }, ct)
                .ConfigureAwait(false);
#pragma warning disable CA2000 // The image owns the device from the open on (and disposes it when the open fails).
        var device = await ConnectAsync(spec, readOnly: true, ct).ConfigureAwait(false);
#pragma warning restore CA2000
        try
        {
            return await Qcow2Image.OpenOnDeviceAsync(device, new Qcow2OpenOptions { Format = spec.Format, Snapshot = snapshot }, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is InvalidDataException or NotSupportedException or Qcow2ImageCorruptException)
        {
            throw new CliException($"Could not open '{spec.Argument}': {ex.Message}", ex);
        }
    }

    /// <summary>Connects to the export as a device named as qemu names the image (the device owns the connection).</summary>
    public static async Task<NbdBlockDevice> ConnectAsync(ImageSpec spec, bool readOnly, CancellationToken ct)
    {
        var client = await ConnectClientAsync(spec, readOnly, ct).ConfigureAwait(false);
        return new NbdBlockDevice(client, spec.DisplayName);
    }

    /// <summary>Connects to the export of an NBD spec.</summary>
    public static async Task<NbdClient> ConnectClientAsync(ImageSpec spec, bool readOnly, CancellationToken ct)
    {
        var nbd = spec.Nbd ?? throw new InvalidOperationException($"'{spec.Argument}' is not an NBD image");
        var options = new NbdClientOptions
        {
            Host = nbd.Host,
            Port = nbd.Port,
            UnixSocket = nbd.Socket,
            ExportName = nbd.Export,
            ReadOnly = readOnly,
            Tls = spec.TlsDirectory is { } dir ? new NbdClientTls { Directory = dir, Hostname = nbd.TlsHostname } : null,
        };
        try
        {
            return await NbdClient.ConnectAsync(options, ct).ConfigureAwait(false);
        }
        catch (IOException ex) when (ex.InnerException is System.Net.Sockets.SocketException socket)
        {
            // Nothing listening (or no such socket): qemu's wording, the server named, the OS reason (.NET
            // reports a missing socket file as EADDRNOTAVAIL; connect(2) said ENOENT).
            string why = nbd.Socket is { } path && !File.Exists(path) ? "No such file or directory" : socket.Message;
            throw new CliException($"Could not open '{spec.Argument}': Failed to connect to '{nbd.ServerName}': {why}", ex);
        }
        catch (Exception ex) when (ex is IOException or System.Net.Sockets.SocketException or System.Security.Authentication.AuthenticationException
            or InvalidDataException or NotSupportedException or UnauthorizedAccessException)
        {
            throw new CliException($"Could not open '{spec.Argument}': {ex.Message.ReplaceLineEndings(" ")}", ex);
        }
    }

    /// <summary>The format of the image on <paramref name="device"/>: the spec's, or probed by the qcow2 magic (raw otherwise), as qemu-img does.</summary>
    public static async Task<string> FormatOfAsync(ImageSpec spec, IBlockDevice device, CancellationToken ct)
    {
        if (spec.Format is { } format) return format;
        var magic = new byte[(int)Math.Min(4, device.Length)];
        int n = magic.Length == 0 ? 0 : await device.ReadAsync(magic, 0, ct).ConfigureAwait(false);
        return Qcow2Header.HasMagic(magic.AsSpan(0, n)) ? "qcow2" : "raw";
    }
}
