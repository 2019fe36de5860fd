using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Qcow2Actors.Nbd.Metrics;
using Qcow2Actors.Nbd.Protocol;

namespace Qcow2Actors.Nbd;

/// <summary>
/// An NBD server (fixed newstyle, with optional or required TLS by NBD_OPT_STARTTLS) serving one or more <see cref="INbdExport"/>s over TCP
/// or a Unix domain socket. Each connection is independent: a protocol violation or a failing
/// export request ends at most that connection, never the server or other clients.
/// </summary>
/// <remarks>
/// Lifecycle: <see cref="StartAsync"/> binds and starts accepting; <see cref="StopAsync(CancellationToken)"/> stops
/// accepting, lets requests already read complete and reply, then closes every connection. The
/// exports belong to the caller, who flushes and closes them after the stop.
/// The set of exports can change while the server runs (<see cref="AddExport"/>, <see cref="RemoveExportAsync"/>);
/// NBD_OPT_LIST and the handshake always see the current set.
/// Over 450 lines because accepting, the connection limits, run-time export changes and the stop all work on the one
/// registry of connections this class owns.
/// </remarks>
public sealed class NbdServer : IAsyncDisposable
{
    // The export set is replaced whole under _exportsLock and read without a lock: handshakes see one
    // consistent set, and removal can tell which connections entered an export that is gone.
    private readonly Lock _exportsLock = new();
    private volatile ExportSet _exports = ExportSet.Empty;
    private readonly ConcurrentDictionary<NbdConnection, Task> _connections = new();
    private readonly CancellationTokenSource _stopping = new();
    private readonly CancellationTokenSource _abort = new();
    private readonly ILogger _log;
    private readonly LogThrottle _refusals;
    private readonly LogThrottle _handshakeTimeouts;
    private readonly LogThrottle _idleTimeouts;
    private readonly LogThrottle _tenantRefusals;
    private readonly TenantConnectionCounts _tenants = new();
    private readonly NegotiatingConnections _negotiating = new();
    private TaskCompletionSource _connectionClosed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Socket? _listener;
    private Task? _acceptLoop;
    private int _state; // 0 new, 1 started, 2 stopped

    /// <summary>Creates a server; nothing is bound until <see cref="StartAsync"/>.</summary>
    /// <exception cref="ArgumentException">
    /// No exports (unless <see cref="NbdServerOptions.AllowNoExports"/>), duplicate names, or a name longer than the protocol allows.
    /// </exception>
    public NbdServer(NbdServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate(nameof(options));
        if (options.TlsMode != NbdTlsMode.Off) Tls = new Tls.TlsUpgrade(options.TlsCredentials!);
        var exports = ExportSet.Empty;
        foreach (var export in options.Exports)
        {
            Validate(export, nameof(options));
            if (exports.ByName.ContainsKey(export.Name))
                throw new ArgumentException($"two exports are named '{export.Name}'", nameof(options));
            exports = exports.With(export);
        }
        _exports = exports;
        Options = options;
        _log = options.LoggerFactory?.CreateLogger<NbdServer>() ?? NullLogger<NbdServer>.Instance;
        _refusals = new LogThrottle(options.TimeProvider, TimeSpan.FromSeconds(10));
        _handshakeTimeouts = new LogThrottle(options.TimeProvider, TimeSpan.FromSeconds(10));
        _idleTimeouts = new LogThrottle(options.TimeProvider, TimeSpan.FromSeconds(10));
        _tenantRefusals = new LogThrottle(options.TimeProvider, TimeSpan.FromSeconds(10));
    }

    /// <summary>
    /// The bound on open connections in force from <see cref="StartAsync"/> on: the configured
    /// <see cref="NbdServerOptions.MaxConnections"/> or its default, within the descriptors free then.
    /// </summary>
    public int MaxConnections { get; private set; }

    /// <summary>
    /// The bound on connections still negotiating in force from <see cref="StartAsync"/> on: the configured
    /// <see cref="NbdServerOptions.MaxNegotiatingConnections"/> or its default, never above <see cref="MaxConnections"/>.
    /// </summary>
    public int MaxNegotiatingConnections { get; private set; }

    /// <summary>The options the server was created with.</summary>
    public NbdServerOptions Options { get; }

    /// <summary>The TLS handshake STARTTLS runs; null when the listener offers no TLS.</summary>
    internal Tls.TlsUpgrade? Tls { get; }

    /// <summary>The exports served now, in the order they were added; the first is the default export.</summary>
    public IReadOnlyList<INbdExport> Exports => _exports.InOrder;

    /// <summary>
    /// Starts serving <paramref name="export"/> at once (before or after <see cref="StartAsync"/>): new clients can
    /// select it and NBD_OPT_LIST shows it. The server never disposes, flushes or closes it.
    /// </summary>
    /// <exception cref="ArgumentException">An export of that name is served, the name is longer than the protocol allows, or the size is negative.</exception>
    public void AddExport(INbdExport export)
    {
        ArgumentNullException.ThrowIfNull(export);
        Validate(export, nameof(export));
        lock (_exportsLock)
        {
            if (_exports.ByName.ContainsKey(export.Name))
                throw new ArgumentException($"an export named '{export.Name}' is already served", nameof(export));
            _exports = _exports.With(export);
        }
        _log.LogInformation("NBD: export '{Export}' added", export.Name);
    }

    /// <summary>
    /// Stops serving the export named <paramref name="name"/>: new clients get "unknown export" at once; clients
    /// connected to it stop being read from, their requests already read finish and reply, and then they are
    /// disconnected. Completes when they are gone (or, if <paramref name="cancellationToken"/> fires first, cuts them off).
    /// </summary>
    /// <returns>False when no export of that name was served.</returns>
    public async Task<bool> RemoveExportAsync(string name, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(name);
        INbdExport? removed;
        lock (_exportsLock)
        {
            if (!_exports.ByName.TryGetValue(name, out removed)) return false;
            _exports = _exports.Without(removed);
        }
        var leaving = new List<(NbdConnection Connection, Task Served)>();
        foreach (var (connection, served) in _connections)
        {
            if (!ReferenceEquals(connection.Export, removed)) continue;
            connection.Leave();
            leaving.Add((connection, served));
        }
        try
        {
            await Task.WhenAll(leaving.Select(c => c.Served)).WaitAsync(cancellationToken);
        }
        catch (OperationCanceledException)
        {
            foreach (var (connection, _) in leaving) connection.Abort();
            await Task.WhenAll(leaving.Select(c => c.Served));
        }
        _log.LogInformation("NBD: export '{Export}' removed; {Count} client(s) disconnected", name, leaving.Count);
        return true;
    }

    /// <summary>
    /// Closes every connection of <paramref name="tenant"/> at once, as a revoked tenant's must be: those
    /// transmitting on one of its exports, and (with <see cref="NbdServerOptions.TenantOf"/>) those whose client
    /// resolved to it, still negotiating or on a shared export. Their requests in flight are cut off, not
    /// waited for. Completes when they are gone; returns how many were closed.
    /// </summary>
    public async Task<int> DisconnectTenantAsync(string tenant)
    {
        ArgumentNullException.ThrowIfNull(tenant);
        var closing = new List<Task>();
        foreach (var (connection, served) in _connections)
        {
            if (connection.Export?.Tenant != tenant && connection.Tenant != tenant) continue;
            connection.Abort();
            closing.Add(served);
        }
        await Task.WhenAll(closing);
        if (closing.Count > 0) _log.LogInformation("NBD: tenant '{Tenant}' revoked; {Count} client(s) disconnected", tenant, closing.Count);
        return closing.Count;
    }

    /// <summary>Connections that have selected the export named <paramref name="exportName"/> and are being served.</summary>
    public int GetConnectionCount(string exportName)
    {
        var count = 0;
        foreach (var connection in _connections.Keys)
            if (connection.Export?.Name == exportName && IsServed(connection.Export)) count++;
        return count;
    }

    /// <summary>True while <paramref name="export"/> (this very instance) is in the served set.</summary>
    internal bool IsServed(INbdExport export) =>
        _exports.ByName.TryGetValue(export.Name, out var current) && ReferenceEquals(current, export);

    private static void Validate(INbdExport export, string parameter)
    {
        if (Encoding.UTF8.GetByteCount(export.Name) > NbdProtocol.MaxStringLength)
            throw new ArgumentException($"export name longer than {NbdProtocol.MaxStringLength} bytes", parameter);
        if (export.Size < 0) throw new ArgumentException($"export '{export.Name}' has a negative size", parameter);
    }

    /// <summary>The endpoint actually bound (with the real port when 0 was asked for); null before start.</summary>
    public EndPoint? LocalEndPoint { get; private set; }

    /// <summary>Connections currently open (handshaking or transmitting).</summary>
    public int ConnectionCount => _connections.Count;

    /// <summary>Whether any connection holds a request whose reply has not gone yet (tests wait on it before moving fake time).</summary>
    internal bool HasRequestsInFlight => _connections.Keys.Any(c => c.HasRequestsInFlight);

    /// <summary>
    /// The URI a client (qemu, libnbd) connects with, e.g. <c>nbd://127.0.0.1:10809/name</c> or
    /// <c>nbd+unix:///name?socket=/run/x.sock</c> (<c>nbds</c> when TLS is required). The export defaults to the first one.
    /// </summary>
    /// <exception cref="InvalidOperationException">The server has not been started.</exception>
    public string GetUri(string? exportName = null)
    {
        var exports = Exports;
        var name = Uri.EscapeDataString(exportName ?? (exports.Count > 0 ? exports[0].Name : ""));
        // nbds: the client must speak TLS (libnbd's scheme); an optional-TLS server is reachable either way.
        var scheme = Options.TlsMode == NbdTlsMode.Required ? "nbds" : "nbd";
        return LocalEndPoint switch
        {
            IPEndPoint ip when ip.AddressFamily == AddressFamily.InterNetworkV6 => $"{scheme}://[{ip.Address}]:{ip.Port}/{name}",
            IPEndPoint ip => $"{scheme}://{ip.Address}:{ip.Port}/{name}",
            UnixDomainSocketEndPoint unix => $"{scheme}+unix:///{name}?socket={unix}",
            _ => throw new InvalidOperationException("the server is not listening"),
        };
    }

    /// <summary>Binds the endpoint and starts accepting clients.</summary>
    /// <exception cref="InvalidOperationException">Already started or stopped.</exception>
    /// <exception cref="SocketException">The endpoint cannot be bound.</exception>
    public Task StartAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.CompareExchange(ref _state, 1, 0) != 0) throw new InvalidOperationException("the server was already started");
        cancellationToken.ThrowIfCancellationRequested();
        var endPoint = Options.EndPoint;
        var unix = endPoint is UnixDomainSocketEndPoint;
        var listener = unix
            ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
            : new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (unix) RemoveStaleUnixSocket(endPoint.ToString()!);
            listener.Bind(endPoint);
            // The kernel's largest backlog (somaxconn), as qemu-nbd: a burst of clients waits in the
            // queue instead of having its handshakes dropped while the accept loop catches up.
            listener.Listen();
        }
        catch
        {
            listener.Dispose();
            _state = 0;
            throw;
        }
        _listener = listener;
        LocalEndPoint = listener.LocalEndPoint ?? endPoint;
        long softLimit = NbdServerOptions.FileDescriptorSoftLimit();
        (MaxConnections, var lowered) = NbdServerOptions.EffectiveMaxConnections(Options.MaxConnections, softLimit, NbdServerOptions.OpenDescriptors());
        if (lowered)
            _log.LogWarning("NBD: max-connections {Configured} lowered to {Max}: the file descriptor limit ({Limit}) leaves no more with {Headroom} kept free",
                Options.MaxConnections, MaxConnections, softLimit, NbdServerOptions.DescriptorHeadroom);
        MaxNegotiatingConnections = NbdServerOptions.EffectiveMaxNegotiating(Options.MaxNegotiatingConnections, MaxConnections);
        _log.LogInformation("NBD server listening on {EndPoint} with {Count} export(s)", LocalEndPoint, Exports.Count);
        var loop = new AcceptLoop(listener.AcceptAsync, Admit, Options.TimeProvider, _log);
        _acceptLoop = Task.Run(() => loop.RunAsync(_stopping.Token), CancellationToken.None);
        return Task.CompletedTask;
    }

    /// <summary>
    /// A socket file left by a crashed server would make bind fail; one nobody answers on is
    /// stale and safe to remove, while a live one means another server owns the path.
    /// </summary>
    private static void RemoveStaleUnixSocket(string path)
    {
        if (!File.Exists(path)) return;
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
        }
        catch (SocketException)
        {
            File.Delete(path);
        }
    }

    /// <summary>
    /// Starts serving a client the accept loop got, or closes it at once when the server is full or
    /// too many clients are still negotiating.
    /// </summary>
    private void Admit(Socket socket)
    {
        var peer = socket.RemoteEndPoint?.ToString() ?? "unix-client";
        if (_connections.Count >= MaxConnections)
        {
            // One throttle for refusals and evictions: under a flood one line per interval is enough.
            if (_refusals.TryEnter(out var more))
                _log.LogWarning("NBD: refused a connection from {Peer}: {Count} connections open, the most allowed (max-connections){More}",
                    peer, _connections.Count, LogThrottle.More(more));
            NbdMetrics.Refused(LocalEndPoint, "max-connections");
            socket.Dispose();
            return;
        }
        if (_negotiating.EvictOldestAtOrOver(MaxNegotiatingConnections, out int negotiating) is { } evicted)
        {
            // The oldest handshake is the likeliest to be idle or dribbling; a real client negotiates in milliseconds.
            evicted.Abort();
            NbdMetrics.Refused(LocalEndPoint, "max-negotiating");
            if (_refusals.TryEnter(out var more))
                _log.LogWarning("NBD: closed {Evicted}, the oldest of {Count} connections still negotiating (max-negotiating), to admit {Peer}{More}",
                    evicted.Peer, negotiating, peer, LogThrottle.More(more));
        }
        NbdMetrics.Accepted(LocalEndPoint);
        if (socket.AddressFamily is AddressFamily.InterNetwork or AddressFamily.InterNetworkV6) socket.NoDelay = true;
        var connection = new NbdConnection(this, socket, _log, _stopping.Token, _abort.Token);
        _negotiating.Add(connection);
        // Registered before it runs, so a client that leaves at once is still removed (and never
        // counts against MaxConnections for ever).
        var registered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _connections[connection] = ServeAsync(connection, registered.Task);
        registered.SetResult();
    }

    private async Task ServeAsync(NbdConnection connection, Task registered)
    {
        await registered;
        try
        {
            await connection.RunAsync();
        }
        finally
        {
            EndNegotiation(connection);
            if (connection.CountedTenant is { } tenant) _tenants.Leave(tenant);
            _connections.TryRemove(connection, out _);
            Interlocked.Exchange(ref _connectionClosed, new(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
        }
    }

    /// <summary>
    /// Completes when the next connection has closed (after <see cref="ConnectionCount"/> dropped);
    /// take it before reading the count, so a close in between is not missed.
    /// </summary>
    internal Task NextConnectionClosed => Volatile.Read(ref _connectionClosed).Task;

    /// <summary>
    /// Called when a connection's reader holds a request and must wait for one of the
    /// <see cref="NbdServerOptions.MaxInFlightRequests"/> slots: the bound is holding the client back.
    /// </summary>
    internal Action? ReaderWaitingForSlot { get; set; }

    /// <summary>
    /// Called when a connection's reader holds a request and must wait for its share of
    /// <see cref="NbdServerOptions.MaxInFlightBytes"/>: the byte bound is holding the client back.
    /// </summary>
    internal Action? ReaderWaitingForBytes { get; set; }

    /// <summary>Connections accepted that have not yet chosen an export (or left).</summary>
    internal int NegotiatingCount => _negotiating.Count;

    /// <summary>The connection chose an export or closed: it no longer counts against the negotiating bound.</summary>
    internal void EndNegotiation(NbdConnection connection) => _negotiating.Remove(connection);

    /// <summary>
    /// Counts a connection toward <paramref name="tenant"/>'s bound, or returns the one-line reason it
    /// may not (logged through a throttle and counted as <c>max-connections-per-tenant</c>).
    /// </summary>
    internal string? TryEnterTenant(string tenant, string peer)
    {
        var max = Options.MaxConnectionsPerTenant;
        if (_tenants.TryEnter(tenant, max)) return null;
        NbdMetrics.Refused(LocalEndPoint, "max-connections-per-tenant");
        if (_tenantRefusals.TryEnter(out var more))
            _log.LogWarning("NBD: refused {Peer}: tenant '{Tenant}' has {Max} connections open, the most allowed (max-connections-per-tenant){More}",
                peer, tenant, max, LogThrottle.More(more));
        return $"too many connections for this tenant ({max} open, the most allowed)";
    }

    /// <summary>Connections counted toward <paramref name="tenant"/>'s <see cref="NbdServerOptions.MaxConnectionsPerTenant"/>.</summary>
    public int GetTenantConnectionCount(string tenant)
    {
        ArgumentNullException.ThrowIfNull(tenant);
        return _tenants.Count(tenant);
    }

    /// <summary>A transmitting client had nothing in flight for the idle timeout; its connection is being closed.</summary>
    internal void ReportIdleTimeout(string peer)
    {
        NbdMetrics.Refused(LocalEndPoint, "idle-timeout");
        if (_idleTimeouts.TryEnter(out var more))
            _log.LogWarning("NBD: closed {Peer}: no request for {Seconds} s (idle-timeout){More}",
                peer, Options.IdleTimeout.TotalSeconds, LogThrottle.More(more));
    }

    /// <summary>A client did not finish negotiating in time; its connection is being closed.</summary>
    internal void ReportHandshakeTimeout(string peer)
    {
        NbdMetrics.Refused(LocalEndPoint, "handshake-timeout");
        if (_handshakeTimeouts.TryEnter(out var more))
            _log.LogWarning("NBD: closed {Peer}: no export negotiated within {Seconds} s (handshake-timeout){More}",
                peer, Options.HandshakeTimeout.TotalSeconds, LogThrottle.More(more));
    }

    internal INbdExport? FindExport(string name)
    {
        var exports = _exports;
        return name.Length == 0 ? (exports.InOrder.Count > 0 ? exports.InOrder[0] : null) : exports.ByName.GetValueOrDefault(name);
    }

    /// <summary>
    /// Stops accepting, stops reading new requests, waits for the requests already read to
    /// reply, then closes every connection. If <paramref name="cancellationToken"/> fires first,
    /// the remaining connections are cut off without waiting.
    /// </summary>
    public Task StopAsync(CancellationToken cancellationToken = default) => StopCoreAsync(null, cancellationToken);

    /// <summary>
    /// As <see cref="StopAsync(CancellationToken)"/>, with a deadline: connections still busy
    /// <paramref name="gracePeriod"/> after the server stopped accepting are cut off. The deadline is
    /// timed by <see cref="NbdServerOptions.TimeProvider"/>; <see cref="Timeout.InfiniteTimeSpan"/> waits for ever.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="gracePeriod"/> is negative (and not infinite).</exception>
    public Task StopAsync(TimeSpan gracePeriod, CancellationToken cancellationToken = default)
    {
        if (gracePeriod < TimeSpan.Zero && gracePeriod != Timeout.InfiniteTimeSpan)
            throw new ArgumentOutOfRangeException(nameof(gracePeriod), gracePeriod, "the stop deadline must not be negative");
        return StopCoreAsync(gracePeriod, cancellationToken);
    }

    private async Task StopCoreAsync(TimeSpan? gracePeriod, CancellationToken cancellationToken)
    {
        var previous = Interlocked.Exchange(ref _state, 2);
        if (previous == 2) return;
        await _stopping.CancelAsync();
        _listener?.Dispose();
        if (_acceptLoop is not null) await _acceptLoop;
        if (LocalEndPoint is UnixDomainSocketEndPoint unix)
        {
            try { File.Delete(unix.ToString()!); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }

        // Armed only now, so the grace period is all spent waiting for the connections.
        using var deadline = gracePeriod is { } grace && grace != Timeout.InfiniteTimeSpan
            ? new CancellationTokenSource(grace, Options.TimeProvider)
            : null;
        using var either = deadline is null ? null : CancellationTokenSource.CreateLinkedTokenSource(deadline.Token, cancellationToken);
        var all = Task.WhenAll(_connections.Values);
        try
        {
            await all.WaitAsync(either?.Token ?? cancellationToken);
        }
        catch (OperationCanceledException)
        {
            await _abort.CancelAsync();
            foreach (var connection in _connections.Keys) connection.Abort();
            try
            {
                await all.WaitAsync(AbortGrace, Options.TimeProvider, CancellationToken.None);
            }
            catch (TimeoutException)
            {
                // A connection whose reader runs a write on its own receive thread ends only when that write returns:
                // with the disk hung, not before. Its socket is closed; it leaves the server's count when the disk answers.
                _log.LogWarning("NBD server on {EndPoint}: {Count} connection(s) still inside a write to a disk that does not answer; stopped without them",
                    LocalEndPoint, _connections.Count);
            }
        }
        _log.LogInformation("NBD server on {EndPoint} stopped", LocalEndPoint);
    }

    /// <summary>How long a stop waits, after cutting the connections off, for those still inside a request to end.</summary>
    internal static readonly TimeSpan AbortGrace = TimeSpan.FromSeconds(2);

    /// <summary>Same as <see cref="StopAsync(CancellationToken)"/> without a deadline.</summary>
    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _stopping.Dispose();
        _abort.Dispose();
    }
}
