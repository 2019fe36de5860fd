using System.Buffers;
using System.IO.Pipelines;
using System.Net.Security;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Qcow2Actors.Nbd.Metrics;
using static Qcow2Actors.Nbd.Protocol.NbdProtocol;

namespace Qcow2Actors.Nbd.Protocol;

/// <summary>
/// One client's lifetime: the handshake (<see cref="NbdHandshake"/>), then the transmission loop,
/// which reads requests one after another (write payloads included, so the stream stays in step)
/// under the per-connection bounds on requests and bytes in flight, and hands each to the
/// <see cref="NbdCommandDispatcher"/> to run concurrently. Replies leave through the
/// <see cref="ReplySender"/>, which holds them while more requests are already buffered so a
/// pipelined batch goes out in one send. Anything that goes wrong here ends at most this connection.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA1001:Types that own disposable fields should be disposable",
    Justification = "RunAsync is the connection's whole life: its finally closes the socket and disposes _stream. _cut, like _gone, holds no timer or wait handle. _slots is "
        + "used through WaitAsync/Release only, so it never allocates a wait handle, and after a hard abort a late Release "
        + "from a request still being dispatched must not meet a disposed semaphore.")]
internal sealed class NbdConnection
{
    private readonly NbdServer _server;
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly SocketReceiver _receiver;
    private readonly PipeReader _reader;
    private readonly ILogger _log;
    private readonly CancellationTokenSource _leave; // the server stopping, or this connection's export removed
    private readonly CancellationToken _stopping;
    private readonly CancellationToken _abort;
    private volatile INbdExport? _export;
    private volatile string? _tenant;
    private SslStream? _tls; // set by STARTTLS; from then on every byte in and out goes through it
    private readonly string _peer;

    // Fires when no reply can reach the client any more (it hung up, a send failed, hard abort):
    // requests still waiting (in a throttle group, say) stop waiting instead of running for nobody.
    // Not linked to the server's abort token (that would leave a registration per connection on it)
    // and never disposed: late requests may still look at it, and without a timer or wait handle
    // it holds nothing to free.
    private readonly CancellationTokenSource _gone = new();
    // Fires on Abort alone (this connection cut off: a revoked tenant, a removal that ran out of
    // time): the close stops waiting for requests still running, as a server-wide abort does.
    private readonly CancellationTokenSource _cut = new();
    private SemaphoreSlim _slots = null!;
    private AsyncByteGate _bytes = null!;
    private ReplySender _sender = null!;
    private int _maxSlots;
    private volatile bool _broken;
    private volatile string? _countedTenant;
    // Idle timeout (only when configured): when the last request was read or answered, and the timer that checks it.
    private ITimer? _idleTimer;
    private long _lastActivity;

    public NbdConnection(NbdServer server, Socket socket, ILogger log, CancellationToken stopping, CancellationToken abort)
    {
        _server = server;
        _socket = socket;
        _log = log;
        _leave = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        _stopping = _leave.Token;
        _abort = abort;
        _peer = socket.RemoteEndPoint?.ToString() is { Length: > 0 } p ? p : "unix-client";
        _stream = new NetworkStream(socket, ownsSocket: false);
        _receiver = new SocketReceiver(socket, server.Options.ReceiveThreads && OperatingSystem.IsLinux());
        _reader = _receiver.Reader;
    }

    private NbdServerOptions Options => _server.Options;

    /// <summary>The export the client selected; null while it negotiates.</summary>
    public INbdExport? Export => _export;

    /// <summary>The tenant this connection counts toward (<see cref="NbdServerOptions.MaxConnectionsPerTenant"/>); null when none.</summary>
    public string? CountedTenant => _countedTenant;

    /// <summary>Its place in the server's list of connections still negotiating; null once out of it. Guarded by the server.</summary>
    public LinkedListNode<NbdConnection>? NegotiationNode { get; set; }

    /// <summary>The client's address, for log lines.</summary>
    public string Peer => _peer;

    /// <summary>
    /// Called by the handshake before it accepts NBD_OPT_GO or EXPORT_NAME for <paramref name="export"/>: counts
    /// the connection toward the export's tenant and publishes the export as this connection's, or returns the
    /// one-line reason it may not enter.
    /// </summary>
    private string? AdmitTenant(INbdExport export)
    {
        // The export's tenant: with TenantOf it is the client's own (or the export is shared, with none);
        // a connection enters one export only.
        if (export.Tenant is { } tenant && _countedTenant is null)
        {
            if (_server.TryEnterTenant(tenant, _peer) is { } refusal) return refusal;
            _countedTenant = tenant;
        }
        // Before the reply that lets the client in, so a client that saw it may count on the slot being free.
        _server.EndNegotiation(this);
        // Also before that reply: a client (or test) that has read it finds this connection in the export's
        // connection count. RunAsync publishes it again after the handshake and checks the export is still served.
        Interlocked.Exchange(ref _export, export);
        return null;
    }

    /// <summary>
    /// The client's tenant: with <see cref="NbdServerOptions.TenantOf"/>, the one resolved from its identity (as soon as
    /// it is known, while still negotiating); without, the selected export's. Null: none (yet).
    /// </summary>
    public string? Tenant
    {
        get => _tenant ?? (Options.TenantOf is null ? _export?.Tenant : null);
        internal set => _tenant = value;
    }

    /// <summary>Where the handshake writes: the socket, or the TLS stream once STARTTLS succeeded.</summary>
    internal Stream Output => (Stream?)_tls ?? _stream;

    /// <summary>The client's address as the socket reports it (null on an unnamed Unix socket).</summary>
    internal System.Net.EndPoint? RemoteEndPoint
    {
        get
        {
            try { return _socket.RemoteEndPoint; }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException) { return null; }
        }
    }

    /// <summary>
    /// After NBD_OPT_STARTTLS: stops the plain receive loop, sends <paramref name="ack"/> in plain text, runs the TLS
    /// handshake on the socket and moves both directions onto the TLS stream. Null (nothing sent) when the client
    /// already sent more bytes behind STARTTLS or hung up, which no conforming client does.
    /// </summary>
    /// <exception cref="System.Security.Authentication.AuthenticationException">The TLS handshake failed.</exception>
    internal async Task<NbdClientIdentity?> StartTlsAsync(Tls.TlsUpgrade upgrade, ReadOnlyMemory<byte> ack, CancellationToken cancellationToken)
    {
        // Checked before pausing as well as after: bytes already behind STARTTLS end the connection at once, and a
        // client that fills the pipe that way never gets to hold the pause.
        if (SentEarly()) return null;
        await _receiver.PauseAsync(cancellationToken);
        if (SentEarly()) return null;
        await _stream.WriteAsync(ack, cancellationToken);
        var (tls, identity) = await upgrade.AuthenticateAsync(_stream, RemoteEndPoint, cancellationToken);
        _tls = tls;
        _receiver.Start(tls);
        return identity;
    }

    /// <summary>True when the client sent bytes behind STARTTLS (or hung up) before its reply: nothing of them is consumed.</summary>
    private bool SentEarly()
    {
        if (!_reader.TryRead(out var pending)) return false;
        var early = pending.Buffer.Length > 0 || pending.IsCompleted;
        _reader.AdvanceTo(pending.Buffer.Start);
        return early;
    }

    /// <summary>
    /// Stops reading requests (as a graceful server stop does, for this connection alone): those already
    /// read finish and reply, then the connection closes. Used when its export is removed.
    /// </summary>
    public void Leave()
    {
        try { _leave.Cancel(); } catch (ObjectDisposedException) { }
    }

    /// <summary>Serves the client until it leaves, misbehaves, or the server stops; never throws.</summary>
    public Task RunAsync() => _receiver.Run(pausable: Options.TlsMode != NbdTlsMode.Off, ServeAsync);

    private async Task ServeAsync()
    {
        try
        {
            var session = await new NbdHandshake(_server, this, _reader, _log, _peer, AdmitTenant).RunAsync(_stopping);
            _receiver.EndPausable();
            if (session is not null)
            {
                // A full fence: the store must not pass the read of the served set below (store-load order).
                Interlocked.Exchange(ref _export, session.Export);
                // Removal scans the connections after taking the export out of the set; one that entered
                // it in between sees here that it is gone (the set is read after Export was published).
                if (!_server.IsServed(session.Export))
                {
                    _log.LogInformation("NBD {Peer}: export '{Export}' was removed during the handshake; disconnecting", _peer, session.Export.Name);
                    return;
                }
                _log.LogInformation("NBD {Peer}: connected to export '{Export}'", _peer, session.Export.Name);
                await TransmissionAsync(session);
            }
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested || _abort.IsCancellationRequested || _cut.IsCancellationRequested)
        {
            _log.LogDebug("NBD {Peer}: closed by server stop", _peer);
        }
        catch (Exception ex) when (ex is IOException or SocketException or EndOfStreamException or ObjectDisposedException)
        {
            _log.LogDebug(ex, "NBD {Peer}: connection lost", _peer);
        }
        catch (Exception ex)
        {
            _log.LogWarning(ex, "NBD {Peer}: connection failed", _peer);
        }
        finally
        {
            if (_export is { } served) _log.LogInformation("NBD {Peer}: disconnected from export '{Export}'", _peer, served.Name);
            await _reader.CompleteAsync();
            if (_tls is { } tls) await CloseTlsAsync(tls);
            try { _socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
            _socket.Dispose();
            await _receiver.Completion; // never faults: the receive loop keeps its errors for the reader
            _sender?.Dispose(); // a send still under way met the closed socket; a later one fails and is dropped
            await _stream.DisposeAsync();
            _leave.Dispose();
        }
    }

    /// <summary>
    /// Ends the TLS session with close_notify, as the protocol asks before the TCP close, unless the connection
    /// broke or was cut off; bounded, so a client that stopped reading cannot hold the close.
    /// </summary>
    private async Task CloseTlsAsync(SslStream tls)
    {
        if (!_broken && !_abort.IsCancellationRequested && !_cut.IsCancellationRequested)
        {
            try
            {
                await tls.ShutdownAsync().WaitAsync(TlsCloseTimeout, Options.TimeProvider);
            }
            catch (Exception ex) when (ex is IOException or ObjectDisposedException or InvalidOperationException or NotSupportedException or TimeoutException or SocketException)
            {
                // The peer is gone or not listening: the TCP close below ends it all the same.
            }
        }
        try { await tls.DisposeAsync(); } catch (Exception ex) when (ex is IOException or ObjectDisposedException) { }
    }

    /// <summary>Longest wait for the TLS close_notify to leave before the socket is closed anyway.</summary>
    private static readonly TimeSpan TlsCloseTimeout = TimeSpan.FromSeconds(1);

    /// <summary>Closes the socket at once, failing any pending read or send; used on hard abort.</summary>
    public void Abort()
    {
        _broken = true;
        _ = _gone.CancelAsync(); // its callbacks run off this thread
        _ = _cut.CancelAsync();
        try { _socket.Dispose(); } catch (ObjectDisposedException) { }
        _receiver.Abort(); // a receive loop held by a full pipe meets the closed socket instead of waiting on the reader
    }

    private async Task TransmissionAsync(NbdSession session)
    {
        _server.EndNegotiation(this);
        _maxSlots = Math.Max(1, Options.MaxInFlightRequests);
        _slots = new SemaphoreSlim(_maxSlots, _maxSlots);
        _bytes = new AsyncByteGate(Math.Max(1, Options.MaxInFlightBytes));
        _sender = new ReplySender(_socket, _tls, Release, MarkBroken, Options.TimeProvider, _abort);
        // An export with per-connection state gives this connection its own view (disposed when it ends).
        // Only such a view is the connection's to dispose: a shared export (a throttle wrapper) outlives it.
        IDisposable? view = null;
        if (session.Export is INbdConnectionScopedExport scoped)
        {
            session = session with { Export = scoped.ForConnection() };
            view = session.Export as IDisposable;
        }
        using var ownedView = view;
        var metrics = new ExportMetrics(session.Export);
        var dispatcher = new NbdCommandDispatcher(
            session, Options, new NbdReplyWriter(_sender, session.Structured, metrics), Release, MarkBroken, _log, _peer, _gone.Token);
        metrics.ConnectionOpened();
        StartIdleTimer();
        try
        {
            await ReadRequestsAsync(new NbdRequestReader(_reader), dispatcher);
        }
        catch (Exception ex) when (ex is IOException or SocketException or EndOfStreamException or ObjectDisposedException)
        {
            // The connection is lost (reset, or the client left mid-payload): nobody will read the replies.
            await _gone.CancelAsync();
            throw;
        }
        finally
        {
            _idleTimer?.Dispose();
            _sender.Uncork();
            _sender.SendHeld();
            try
            {
                // Let every request already read finish and reply, so a DISC, a hang-up or a graceful
                // stop never drops acknowledged work on the floor; only a hard abort cuts this short.
                using var cutOff = CancellationTokenSource.CreateLinkedTokenSource(_abort, _cut.Token);
                for (var i = 0; i < _maxSlots; i++) await _slots.WaitAsync(cutOff.Token);
            }
            finally
            {
                metrics.ConnectionClosed();
            }
        }
    }

    private async Task ReadRequestsAsync(NbdRequestReader requests, NbdCommandDispatcher dispatcher)
    {
        while (!_broken)
        {
            // Hold replies back while more requests are already here; send them all at once before waiting.
            if (requests.HasBufferedRequest()) _sender.Cork();
            else _sender.Uncork();

            var (status, request) = await requests.ReadHeaderAsync(_stopping);
            switch (status)
            {
                case RequestReadStatus.HungUp:
                    _log.LogDebug("NBD {Peer}: client hung up", _peer);
                    await _gone.CancelAsync();
                    return;
                case RequestReadStatus.Truncated:
                    _log.LogInformation("NBD {Peer}: truncated request header; disconnecting", _peer);
                    return;
                case RequestReadStatus.BadMagic:
                    // Once framing is lost nothing after it can be trusted.
                    _log.LogInformation("NBD {Peer}: bad request magic 0x{Magic:x8}; disconnecting", _peer, requests.LastBadMagic);
                    return;
            }

            if (_idleTimer is not null) Volatile.Write(ref _lastActivity, Options.TimeProvider.GetTimestamp());
            if (request.Type == CmdDisc)
            {
                _log.LogDebug("NBD {Peer}: soft disconnect", _peer);
                return;
            }
            if (request.Type == CmdWrite && request.Length > (uint)Options.MaxBlockSize)
            {
                // Its payload cannot be skipped without reading it all, so the connection ends; but the client
                // is told why first, as the protocol asks (the close waits for this reply to leave).
                _log.LogInformation("NBD {Peer}: write of {Length} bytes exceeds the {Max} byte limit; answering EOVERFLOW and disconnecting",
                    _peer, request.Length, Options.MaxBlockSize);
                await _slots.WaitAsync(_stopping);
                _sender.Started(request);
                dispatcher.Refuse(request, NbdError.Overflow, $"write of {request.Length} bytes exceeds the maximum block size {Options.MaxBlockSize}");
                return;
            }

            var slot = _slots.WaitAsync(_stopping);
            if (!slot.IsCompleted)
            {
                // The slots free up only as replies leave.
                _sender.Uncork();
                _sender.SendHeld();
                _server.ReaderWaitingForSlot?.Invoke();
            }
            await slot;
            long charge = 0;
            WritePayload? payload = null;
            try
            {
                if (request.Type is CmdRead or CmdWrite or CmdBlockStatus)
                {
                    // A block-status reply's size is known only once the export answers: charge its largest.
                    long size = request.Type == CmdBlockStatus
                        ? dispatcher.BlockStatusCharge
                        : Math.Min(request.Length, (uint)Options.MaxBlockSize);
                    var want = Math.Min(size, Math.Max(1, Options.MaxInFlightBytes));
                    var gate = _bytes.WaitAsync(want, _stopping);
                    if (!gate.IsCompleted)
                    {
                        _sender.Uncork();
                        _sender.SendHeld();
                        _server.ReaderWaitingForBytes?.Invoke();
                    }
                    await gate;
                    charge = want;
                }
                if (request.Type == CmdWrite)
                {
                    payload = WritePayload.Rent((int)request.Length);
                    try
                    {
                        await requests.ReadPayloadAsync(payload.Value.Memory, _stopping);
                    }
                    catch (EndOfStreamException)
                    {
                        _log.LogInformation("NBD {Peer}: client left in the middle of a write payload", _peer);
                        throw;
                    }
                }
            }
            catch
            {
                payload?.Return();
                Release(charge);
                if (_stopping.IsCancellationRequested) return;
                throw;
            }

            _sender.Started(request);
            dispatcher.Dispatch(request, payload, charge);
        }
    }

    /// <summary>A request is done (its reply sent, or no reply possible): give back its slot and its bytes.</summary>
    private void Release(long charge)
    {
        if (_idleTimer is not null) Volatile.Write(ref _lastActivity, Options.TimeProvider.GetTimestamp());
        _bytes.Release(charge);
        _slots.Release();
    }

    /// <summary>Whether any request has taken a slot it has not given back (its reply not yet sent).</summary>
    internal bool HasRequestsInFlight => _slots is not null && _slots.CurrentCount != _maxSlots;

    /// <summary>Arms the idle check when <see cref="NbdServerOptions.IdleTimeout"/> is set.</summary>
    private void StartIdleTimer()
    {
        var idle = Options.IdleTimeout;
        if (idle <= TimeSpan.Zero || idle == Timeout.InfiniteTimeSpan) return;
        _lastActivity = Options.TimeProvider.GetTimestamp();
        _idleTimer = Options.TimeProvider.CreateTimer(_ => CheckIdle(), null, idle, Timeout.InfiniteTimeSpan);
    }

    /// <summary>
    /// The idle timer fired: close the connection if nothing is in flight and nothing happened for the
    /// whole timeout, else look again when the timeout would next run out. One timer per connection,
    /// re-armed here, so the request path only stores a timestamp.
    /// </summary>
    private void CheckIdle()
    {
        var idle = Options.IdleTimeout;
        var time = Options.TimeProvider;
        var due = idle;
        if (_slots.CurrentCount == _maxSlots)
        {
            var quiet = time.GetElapsedTime(Volatile.Read(ref _lastActivity));
            if (quiet >= idle)
            {
                _server.ReportIdleTimeout(_peer);
                Leave(); // the reader stops; nothing is in flight, so the connection closes at once
                return;
            }
            due = idle - quiet;
        }
        try { _idleTimer?.Change(due, Timeout.InfiniteTimeSpan); } catch (ObjectDisposedException) { }
    }

    /// <summary>After a failed send the reply stream is out of step; close so the reader loop ends too.</summary>
    private void MarkBroken()
    {
        if (_broken) return;
        _broken = true;
        _ = _gone.CancelAsync(); // its callbacks run off this thread
        try { _socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
    }
}
