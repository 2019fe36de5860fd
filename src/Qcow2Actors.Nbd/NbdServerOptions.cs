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
    /// True to let the server start with no exports (a daemon that adds them at run time with
    /// <see cref="NbdServer.AddExport"/>); a client asking for one then gets "unknown export".
    /// </summary>
    public bool AllowNoExports { get; init; }

    /// <summary>
    /// Where to listen: an <see cref="IPEndPoint"/> (default 127.0.0.1:10809; port 0 picks a free
    /// one) or a <see cref="UnixDomainSocketEndPoint"/>.
    /// </summary>
    public EndPoint EndPoint { get; init; } = new IPEndPoint(IPAddress.Loopback, DefaultPort);

    /// <summary>
    /// Largest READ or WRITE accepted (advertised in NBD_INFO_BLOCK_SIZE). A larger READ gets
    /// EINVAL; a larger WRITE gets EOVERFLOW and then the connection closes, since its payload
    /// cannot be skipped without reading it all.
    /// </summary>
    public int MaxBlockSize { get; init; } = DefaultMaxBlockSize;

    /// <summary>
    /// Requests one connection may have unanswered at once (executing, or with a reply waiting for the
    /// client to read it) before the server stops reading from it; the client is then held back by TCP.
    /// </summary>
    public int MaxInFlightRequests { get; init; } = DefaultMaxInFlightRequests;

    /// <summary>The default of <see cref="MaxInFlightRequests"/>.</summary>
    public const int DefaultMaxInFlightRequests = 64;

    /// <summary>
    /// Payload bytes one connection may hold at once: write data read, read data produced and block-status
    /// replies (charged at their largest size), until the reply has left. A client that pipelines requests
    /// and never reads its replies so pins at most this much (plus 512 KiB of receive buffer).
    /// </summary>
    public long MaxInFlightBytes { get; init; } = DefaultMaxInFlightBytes;

    /// <summary>The default of <see cref="MaxInFlightBytes"/>: 64 MiB.</summary>
    public const long DefaultMaxInFlightBytes = 64L * 1024 * 1024;

    /// <summary>How long a client may take from connecting to finishing option negotiation, as qemu-nbd's handshake limit.</summary>
    public static readonly TimeSpan DefaultHandshakeTimeout = TimeSpan.FromSeconds(10);

    /// <summary>
    /// A connection that has not finished negotiation (NBD_OPT_GO or EXPORT_NAME) this long after
    /// it was accepted is closed, so idle or stuck clients cannot hold connections (and file
    /// descriptors) for ever. <see cref="TimeSpan.Zero"/> or <see cref="Timeout.InfiniteTimeSpan"/>: no limit.
    /// </summary>
    public TimeSpan HandshakeTimeout { get; init; } = DefaultHandshakeTimeout;

    /// <summary>
    /// Most connections open at once (negotiating or transmitting); a client beyond it is accepted
    /// and closed at once. 0 (the default): <see cref="DefaultMaxConnections"/> of the descriptors
    /// free when the server starts. Any value is lowered so that <see cref="DescriptorHeadroom"/>
    /// descriptors stay free (the server logs it).
    /// </summary>
    public int MaxConnections { get; init; }

    /// <summary>
    /// Most connections still negotiating (connected, no export chosen yet) at once; a client beyond
    /// it closes the one that has been negotiating longest, which a client that negotiates at once
    /// never is. A flood of idle or dribbling handshakes so holds only this share of
    /// <see cref="MaxConnections"/> and cannot keep other clients from getting in.
    /// 0 (the default): a quarter of the connection bound in force, or all of it up to 16.
    /// </summary>
    public int MaxNegotiatingConnections { get; init; }

    /// <summary>
    /// Most connections transmitting on the exports of one tenant (<see cref="INbdExport.Tenant"/>)
    /// at once, so one tenant cannot take every slot from the others. A client beyond it gets
    /// NBD_REP_ERR_POLICY with a one-line message to NBD_OPT_GO (NBD_OPT_EXPORT_NAME, which cannot
    /// carry an error, is dropped). Exports without a tenant are not counted. 0 (the default): no bound.
    /// </summary>
    public int MaxConnectionsPerTenant { get; init; }

    /// <summary>
    /// A transmitting connection with no request in flight for this long is closed (timed by
    /// <see cref="TimeProvider"/>). <see cref="TimeSpan.Zero"/> (the default) or
    /// <see cref="Timeout.InfiniteTimeSpan"/>: never, since a VM's idle disk is a legitimate client.
    /// </summary>
    public TimeSpan IdleTimeout { get; init; }

    /// <summary>
    /// True (the default): on Linux, a connection without TLS receives on a thread of its own, which also parses its
    /// requests and runs its writes, zeroes, trims and flushes (the export may do a whole write there,
    /// <see cref="INbdExport.WriteInlineAsync"/>), so a request crosses no thread hand-off; a write stuck on a disk
    /// holds up only that connection. False: every connection receives through .NET's socket engine, whose threads all
    /// connections share, and writes go to the thread pool unless the export starts them without blocking
    /// (<see cref="INbdExport.TryStartWrite"/>). A TLS connection (<see cref="TlsMode"/> not Off) always does the latter.
    /// </summary>
    public bool ReceiveThreads { get; init; } = true;

    /// <summary>Throws <see cref="ArgumentException"/> (for <paramref name="parameter"/>) naming the first setting out of range.</summary>
    internal void Validate(string parameter)
    {
        if (Exports.Count == 0 && !AllowNoExports) throw new ArgumentException("at least one export is required", parameter);
        if (MaxBlockSize < 512) throw new ArgumentException("MaxBlockSize must be at least 512", parameter);
        if (MaxConnections < 0) throw new ArgumentException("MaxConnections must not be negative", parameter);
        if (HandshakeTimeout < TimeSpan.Zero && HandshakeTimeout != Timeout.InfiniteTimeSpan)
            throw new ArgumentException("HandshakeTimeout must not be negative", parameter);
        if (!Enum.IsDefined(TlsMode)) throw new ArgumentException($"unknown TlsMode {TlsMode}", parameter);
        if (TlsMode == NbdTlsMode.Off && Authorize is not null)
            throw new ArgumentException("Authorize needs TLS: set TlsMode Required (no plain-text client has a certificate to authorize)", parameter);
        if (TlsMode != NbdTlsMode.Off && TlsCredentials is null) throw new ArgumentException($"TlsMode {TlsMode} needs TlsCredentials", parameter);
        if (IdleTimeout < TimeSpan.Zero && IdleTimeout != Timeout.InfiniteTimeSpan)
            throw new ArgumentException("IdleTimeout must not be negative", parameter);
        if (MaxNegotiatingConnections < 0) throw new ArgumentException("MaxNegotiatingConnections must not be negative", parameter);
        if (MaxConnectionsPerTenant < 0) throw new ArgumentException("MaxConnectionsPerTenant must not be negative", parameter);
        if (MaxInFlightRequests < 1) throw new ArgumentException("MaxInFlightRequests must be at least 1", parameter);
        if (MaxInFlightBytes < 1) throw new ArgumentException("MaxInFlightBytes must be at least 1", parameter);
    }

    /// <summary>The bound on negotiating connections in force for <paramref name="configured"/> (0: the default) under <paramref name="maxConnections"/>.</summary>
    internal static int EffectiveMaxNegotiating(int configured, int maxConnections) =>
        configured > 0 ? Math.Min(configured, maxConnections) : Math.Max(Math.Min(maxConnections, 16), maxConnections / 4);

    /// <summary>
    /// Clock of the handshake and idle timeouts, the stop deadline (<see cref="NbdServer.StopAsync(TimeSpan, CancellationToken)"/>),
    /// the accept retry delays and the log throttles; tests pass a fake one.
    /// </summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>
    /// File descriptors kept free beyond every connection: the .NET runtime opens files as it goes
    /// (assemblies on first use, /proc for the GC and thread pool, pipes for new threads), and a
    /// process that meets EMFILE there aborts ("Out of memory."), losing every image's clean close.
    /// </summary>
    public const int DescriptorHeadroom = 64;

    /// <summary>
    /// The bound on connections when none is configured: half the descriptors still free under
    /// the soft limit (the other half stays for journals, lazily loaded assemblies and the
    /// runtime), between 1 and 1024 (each connection also holds up to 64 KiB of read buffer).
    /// </summary>
    /// <param name="softLimit">RLIMIT_NOFILE's soft limit.</param>
    /// <param name="openDescriptors">Descriptors the process has open (assemblies, images, sockets).</param>
    public static int DefaultMaxConnections(long softLimit, int openDescriptors) =>
        (int)Math.Clamp((softLimit - openDescriptors) / 2, 1, 1024);

    /// <summary>The bound in force for <paramref name="configured"/> (0: the default), and whether a configured one was lowered.</summary>
    internal static (int Max, bool Lowered) EffectiveMaxConnections(int configured, long softLimit, int openDescriptors)
    {
        long ceiling = Math.Max(1, softLimit - openDescriptors - DescriptorHeadroom);
        if (configured == 0) return ((int)Math.Min(DefaultMaxConnections(softLimit, openDescriptors), ceiling), false);
        return configured > ceiling ? ((int)ceiling, true) : (configured, false);
    }

    /// <summary>Descriptors this process has open, from /proc/self/fd; 0 where that cannot be read.</summary>
    internal static int OpenDescriptors()
    {
        try
        {
            return Directory.GetFileSystemEntries("/proc/self/fd").Length;
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return 0;
    }

    /// <summary>RLIMIT_NOFILE's soft limit, from /proc/self/limits; 1024 (the usual default) where that cannot be read.</summary>
    internal static long FileDescriptorSoftLimit()
    {
        const long fallback = 1024;
        try
        {
            foreach (var line in File.ReadLines("/proc/self/limits"))
            {
                if (!line.StartsWith("Max open files", StringComparison.Ordinal)) continue;
                var fields = line["Max open files".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                return fields.Length > 0 && long.TryParse(fields[0], out var soft) ? soft : fallback; // "unlimited" too
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return fallback;
    }

    /// <summary>
    /// Whether clients may (<see cref="NbdTlsMode.Optional"/>) or must (<see cref="NbdTlsMode.Required"/>) move to TLS
    /// with NBD_OPT_STARTTLS; <see cref="NbdTlsMode.Off"/> (the default) answers STARTTLS as unsupported.
    /// </summary>
    public NbdTlsMode TlsMode { get; init; }

    /// <summary>The server's certificate and the authorities client certificates must chain to; required unless <see cref="TlsMode"/> is Off.</summary>
    public NbdTlsCredentials? TlsCredentials { get; init; }

    /// <summary>
    /// Null (the default): no tenant isolation, every client sees every export. Set: called with the client's identity
    /// as soon as it is known (at once for a plain-text client, again after STARTTLS) to name its tenant; the client
    /// then sees only exports whose <see cref="INbdExport.Tenant"/> is that tenant, plus exports with no tenant. Any
    /// other export answers NBD_OPT_LIST, INFO, GO, EXPORT_NAME and the meta-context options exactly as a missing
    /// one, so names do not leak. A null tenant sees only exports with no tenant. Must be quick and must not throw.
    /// </summary>
    public Func<NbdClientIdentity, string?>? TenantOf { get; init; }

    /// <summary>
    /// Called after a successful TLS handshake (as qemu's tls-authz): false ends the connection, logged and counted
    /// as refused (<c>tls-authz</c>). Null: every client whose certificate the CA signed is accepted. Set, it makes TLS
    /// required even when <see cref="TlsMode"/> is <see cref="NbdTlsMode.Optional"/> (a plain-text client has no
    /// certificate to authorize, so it is answered as under <see cref="NbdTlsMode.Required"/>); with
    /// <see cref="NbdTlsMode.Off"/> the server refuses to start.
    /// </summary>
    public Func<NbdClientIdentity, bool>? Authorize { get; init; }

    /// <summary>Logs connections, protocol violations and failed requests; silent when null.</summary>
    public ILoggerFactory? LoggerFactory { get; init; }

    /// <summary>Options for a TCP listener on <paramref name="address"/> (loopback when null) and <paramref name="port"/>.</summary>
    public static NbdServerOptions Tcp(IReadOnlyList<INbdExport> exports, int port = DefaultPort, IPAddress? address = null) =>
        new() { Exports = exports, EndPoint = new IPEndPoint(address ?? IPAddress.Loopback, port) };

    /// <summary>Options for a Unix domain socket listener at <paramref name="socketPath"/>.</summary>
    public static NbdServerOptions Unix(IReadOnlyList<INbdExport> exports, string socketPath) =>
        new() { Exports = exports, EndPoint = new UnixDomainSocketEndPoint(socketPath) };
}
