using System.Globalization;

namespace Qcow2Actors.Cli.Sources;

/// <summary>
/// Where an NBD image lives, as every spelling (URI, <c>json:</c>, <c>--image-opts</c>) resolves it:
/// a TCP host and port or a Unix socket, the export name, and the id of the <c>--object
/// tls-creds-x509</c> to use (null: plain NBD).
/// </summary>
internal sealed record NbdTarget
{
    /// <summary>The NBD port qemu uses when none is given.</summary>
    public const int DefaultPort = 10809;

    /// <summary>TCP host; null for a Unix socket.</summary>
    public string? Host { get; init; }

    /// <summary>TCP port.</summary>
    public int Port { get; init; } = DefaultPort;

    /// <summary>Unix socket path; null for TCP.</summary>
    public string? Socket { get; init; }

    /// <summary>Export name ("" for the default export).</summary>
    public string Export { get; init; } = "";

    /// <summary>The id of the tls-creds-x509 object (<c>tls-creds=</c>), or null.</summary>
    public string? TlsCredsId { get; init; }

    /// <summary>The host name the server's certificate must carry (<c>tls-hostname=</c>); null: <see cref="Host"/>.</summary>
    public string? TlsHostname { get; init; }

    /// <summary>The name qemu gives the image (its refreshed filename): nbd://HOST:PORT/EXPORT or nbd+unix:///EXPORT?socket=PATH.</summary>
    public string DisplayName => Socket is not null
        ? (Export.Length == 0 ? $"nbd+unix://?socket={Socket}" : $"nbd+unix:///{Export}?socket={Socket}")
        : (Export.Length == 0
            ? string.Create(CultureInfo.InvariantCulture, $"nbd://{Host}:{Port}")
            : string.Create(CultureInfo.InvariantCulture, $"nbd://{Host}:{Port}/{Export}"));

    /// <summary>host:port or the socket path, as qemu names the server in its connect errors.</summary>
    public string ServerName => Socket ?? string.Create(CultureInfo.InvariantCulture, $"{Host}:{Port}");
}
