using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace Qcow2Actors.Nbd;

/// <summary>How an <see cref="NbdServer"/> listens and how much one connection may hold in flight.</summary>
public sealed record NbdServerOptions
{
    /// <summary>The NBD port IANA reserved; what clients assume when a URI names none.</summary>
    public const int DefaultPort = 10809;

    /// <summary>32 MiB: the largest request every client is told to accept, advertised as the maximum block size.</summary>
    public const int DefaultMaxBlockSize = 32 * 1024 * 1024;

    /// <summary>
    /// Exports served, selected by name; the first is also the default export (the empty name).
    /// Names must be distinct. The server never disposes, flushes or closes them.
    /// </summary>
    public required IReadOnlyList<INbdExport> Exports { get; init; }

    /// <summary>
    /// Where to listen: an <see cref="IPEndPoint"/> (default 127.0.0.1:10809; port 0 picks a free
    /// one) or a <see cref="UnixDomainSocketEndPoint"/>.
    /// </summary>
    public EndPoint EndPoint { get; init; } = new IPEndPoint(IPAddress.Loopback, DefaultPort);

    /// <summary>
    /// Largest READ or WRITE accepted (advertised in NBD_INFO_BLOCK_SIZE). A larger READ gets
    /// EINVAL; a larger WRITE ends the connection, since its payload would have to be swallowed.
    /// </summary>
    public int MaxBlockSize { get; init; } = DefaultMaxBlockSize;

    /// <summary>Requests one connection may have executing at once before the server stops reading from it.</summary>
    public int MaxInFlightRequests { get; init; } = 64;

    /// <summary>Payload bytes (write data held plus read data being produced) one connection may hold at once.</summary>
    public long MaxInFlightBytes { get; init; } = 64L * 1024 * 1024;

    /// <summary>Logs connections, protocol violations and failed requests; silent when null.</summary>
    public ILoggerFactory? LoggerFactory { get; init; }

    /// <summary>Options for a TCP listener on <paramref name="address"/> (loopback when null) and <paramref name="port"/>.</summary>
    public static NbdServerOptions Tcp(IReadOnlyList<INbdExport> exports, int port = DefaultPort, IPAddress? address = null) =>
        new() { Exports = exports, EndPoint = new IPEndPoint(address ?? IPAddress.Loopback, port) };

    /// <summary>Options for a Unix domain socket listener at <paramref name="socketPath"/>.</summary>
    public static NbdServerOptions Unix(IReadOnlyList<INbdExport> exports, string socketPath) =>
        new() { Exports = exports, EndPoint = new UnixDomainSocketEndPoint(socketPath) };
}
