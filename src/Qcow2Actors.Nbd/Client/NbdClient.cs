using System.Buffers.Binary;
using System.Net.Security;
using System.Net.Sockets;
using Qcow2Actors.Nbd.Protocol;
using static Qcow2Actors.Nbd.Protocol.NbdProtocol;

namespace Qcow2Actors.Nbd.Client;

/// <summary>
/// A connection to one NBD export (fixed-newstyle handshake, optional TLS, structured replies, block status),
/// usable from many callers at once: each request gets a cookie, one writer serialises the sends and one reader
/// matches the replies, so requests overlap on the wire. Requests above the server's maximum payload are split.
/// </summary>
/// <remarks>
/// Failures are <see cref="IOException"/>s with one line naming the server and the export: a server's error reply
/// names its errno (EIO, ENOSPC, EPERM, EINVAL, ...) and carries it in <see cref="Exception.HResult"/>; after the
/// connection ends (EOF, reset, a protocol violation) every request fails with the reason. Cancellation is honoured
/// until a request is sent; NBD has no way to withdraw one, so after that the call completes with the server's reply
/// (or fails when the connection ends). <see cref="DisposeAsync"/> sends NBD_CMD_DISC.
/// </remarks>
public sealed class NbdClient : IAsyncDisposable
{
    /// <summary>Largest payload sent or asked for in one request when the server states no maximum (what every server accepts).</summary>
    internal const uint DefaultMaximumPayload = 32 << 20;

    /// <summary>Largest range of one trim, write-zeroes or block-status request: well inside the 32-bit length field.</summary>
    internal const long MaxRangeRequest = 1L << 30;

    /// <summary>How long disposal waits for the server to take the disconnect and close its side.</summary>
    private static readonly TimeSpan DisconnectGrace = TimeSpan.FromSeconds(5);

    /// <summary>How long the synchronous disconnect's blocking NBD_CMD_DISC write may take before it gives up.</summary>
    private static readonly TimeSpan DisconnectSendTimeout = TimeSpan.FromMilliseconds(500);

    private readonly Socket _socket;
    private readonly Stream _stream;
    private readonly NbdInFlight _inFlight = new();
    // Never disposed (it holds no wait handle unless AvailableWaitHandle is asked for): a request may still hold or wait
    // on it when the client is disposed, and must end with the close reason, not an ObjectDisposedException.
#pragma warning disable CA2213
    private readonly SemaphoreSlim _writeGate = new(1, 1);
#pragma warning restore CA2213
    private readonly IReadOnlyDictionary<string, uint> _contexts;
    private readonly ushort _flags;
    private readonly Task _reader;
    private int _disposed;

    private NbdClient(NbdClientOptions options, Socket socket, NbdNegotiation negotiation)
    {
        _socket = socket;
        _stream = negotiation.Stream;
        Endpoint = options.Endpoint;
        ExportName = options.ExportName;
        Size = negotiation.Size;
        _flags = negotiation.TransmissionFlags;
        IsReadOnly = options.ReadOnly || (_flags & FlagReadOnly) != 0;
        ServerReadOnly = (_flags & FlagReadOnly) != 0;
        Structured = negotiation.Structured;
        _contexts = negotiation.Contexts;
        MetaContexts = [.. negotiation.Contexts.Keys];
        MaximumPayload = (int)negotiation.MaximumPayload;
        _reader = Task.Run(new NbdReplyReader(_stream, _inFlight, Endpoint, ExportName).RunAsync);
    }

    /// <summary>Connects, negotiates and enters transmission on the export <paramref name="options"/> names.</summary>
    /// <exception cref="ArgumentException">Neither or both of Host and UnixSocket, or a port outside 1-65535.</exception>
    /// <exception cref="IOException">
    /// One line naming the server and export: connection refused, export not found (NBD_REP_ERR_UNKNOWN), TLS required
    /// (NBD_REP_ERR_TLS_REQD), TLS verification failed, the server closed the connection, not an NBD server.
    /// </exception>
    public static async Task<NbdClient> ConnectAsync(NbdClientOptions options, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        if ((options.Host is null) == (options.UnixSocket is null))
            throw new ArgumentException("set exactly one of Host and UnixSocket", nameof(options));
        if (options.UnixSocket is null && options.Port is < 1 or > 65535)
            throw new ArgumentException(FormattableString.Invariant($"port {options.Port} is outside 1-65535"), nameof(options));

        var socket = await ConnectSocketAsync(options, ct);
#pragma warning disable CA2000 // on success the stream (or the TLS stream over it) passes to the client, which disposes it
        var stream = new NetworkStream(socket, ownsSocket: true);
#pragma warning restore CA2000
        try
        {
            var negotiation = await new NbdClientHandshake(options, stream).RunAsync(ct);
            return new NbdClient(options, socket, negotiation);
        }
        catch
        {
            await stream.DisposeAsync();
            throw;
        }
    }

    private static async Task<Socket> ConnectSocketAsync(NbdClientOptions options, CancellationToken ct)
    {
        var socket = options.UnixSocket is not null
            ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
            : new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            if (options.UnixSocket is not null) await socket.ConnectAsync(new UnixDomainSocketEndPoint(options.UnixSocket), ct);
            else await socket.ConnectAsync(options.Host!, options.Port, ct);
            return socket;
        }
        catch (SocketException ex)
        {
            socket.Dispose();
            var why = ex.SocketErrorCode switch
            {
                SocketError.ConnectionRefused => "connection refused",
                SocketError.HostNotFound or SocketError.NoData or SocketError.TryAgain => "host not found",
                SocketError.AddressNotAvailable when options.UnixSocket is not null => "no such socket",
                SocketError.TimedOut => "connection timed out",
                SocketError.AccessDenied => "permission denied",
                _ => NbdClientErrors.OneLine(ex.Message),
            };
            throw new IOException($"cannot connect to nbd server {options.Endpoint} for export '{options.ExportName}': {why}", ex);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>The export's size in bytes, as the server stated it.</summary>
    public long Size { get; }

    /// <summary>True when writes are refused: the server exports read-only, or <see cref="NbdClientOptions.ReadOnly"/> asked for it.</summary>
    public bool IsReadOnly { get; }

    /// <summary>The metadata contexts the server agreed to (a subset of <see cref="NbdClientOptions.MetaContexts"/>); empty without structured replies.</summary>
    public IReadOnlyList<string> MetaContexts { get; }

    internal string Endpoint { get; }
    internal string ExportName { get; }
    internal bool ServerReadOnly { get; }
    internal bool Structured { get; }
    internal int MaximumPayload { get; }
    internal bool CanFlush => (_flags & FlagSendFlush) != 0;
    internal bool CanFua => (_flags & FlagSendFua) != 0;
    internal bool CanTrim => (_flags & FlagSendTrim) != 0;
    internal bool CanWriteZeroes => (_flags & FlagSendWriteZeroes) != 0;

    /// <summary>Reads <c>buffer.Length</c> bytes at <paramref name="offset"/>; the range must lie inside the export.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range reaches past <see cref="Size"/>.</exception>
    /// <exception cref="IOException">The server failed the read, or the connection ended.</exception>
    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken ct = default)
    {
        CheckRange(offset, buffer.Length, CmdRead);
        return new(ChunkedAsync(offset, buffer.Length, MaximumPayload, (at, length) =>
            RequestAsync(new NbdPendingRequest(CmdRead, at, length) { Buffer = buffer.Slice((int)(at - offset), (int)length) }, 0, default, ct)));
    }

    /// <summary>Writes <paramref name="data"/> at <paramref name="offset"/>; with <paramref name="fua"/> the data is durable when this completes.</summary>
    /// <exception cref="IOException">The export is read-only, the server failed the write, or the connection ended.</exception>
    public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua = false, CancellationToken ct = default)
    {
        CheckWritable(CmdWrite);
        CheckRange(offset, data.Length, CmdWrite);
        var flags = fua && CanFua ? CmdFlagFua : (ushort)0;
        await ChunkedAsync(offset, data.Length, MaximumPayload, (at, length) =>
            RequestAsync(new NbdPendingRequest(CmdWrite, at, length), flags, data.Slice((int)(at - offset), (int)length), ct));
        if (fua && !CanFua) await FlushAsync(ct); // FUA emulated: the server has a write cache but no per-request flag
    }

    /// <summary>
    /// Makes [<paramref name="offset"/>, +<paramref name="length"/>) read as zeros; with <paramref name="mayTrim"/> false
    /// the server must keep the space allocated (NBD_CMD_FLAG_NO_HOLE). Servers without WRITE_ZEROES get zero-filled writes.
    /// </summary>
    /// <exception cref="IOException">The export is read-only, the server failed the request, or the connection ended.</exception>
    public async ValueTask WriteZeroesAsync(long offset, long length, bool mayTrim = true, bool fua = false, CancellationToken ct = default)
    {
        CheckWritable(CmdWriteZeroes);
        CheckRange(offset, length, CmdWriteZeroes);
        if (!CanWriteZeroes)
        {
            var zeros = new byte[(int)Math.Min(length, MaximumPayload)];
            for (long done = 0; done < length; done += zeros.Length)
                await WriteAsync(offset + done, zeros.AsMemory(0, (int)Math.Min(zeros.Length, length - done)), fua, ct);
            return;
        }
        var flags = (ushort)((mayTrim ? 0 : CmdFlagNoHole) | (fua && CanFua ? CmdFlagFua : 0));
        await ChunkedAsync(offset, length, MaxRangeRequest, (at, n) => RequestAsync(new NbdPendingRequest(CmdWriteZeroes, at, n), flags, default, ct));
        if (fua && !CanFua) await FlushAsync(ct);
    }

    /// <summary>
    /// Tells the server the range's content is no longer needed (NBD_CMD_TRIM). Advisory: the range may still read as
    /// before, and a server that does not offer TRIM is not asked at all.
    /// </summary>
    /// <exception cref="IOException">The export is read-only, the server failed the request, or the connection ended.</exception>
    public async ValueTask TrimAsync(long offset, long length, CancellationToken ct = default)
    {
        CheckWritable(CmdTrim);
        CheckRange(offset, length, CmdTrim);
        if (!CanTrim) return;
        await ChunkedAsync(offset, length, MaxRangeRequest, (at, n) => RequestAsync(new NbdPendingRequest(CmdTrim, at, n), 0, default, ct));
    }

    /// <summary>Makes every completed write durable (NBD_CMD_FLUSH); nothing to do when the server has no write cache to flush.</summary>
    /// <exception cref="IOException">The server failed the flush, or the connection ended.</exception>
    public async ValueTask FlushAsync(CancellationToken ct = default)
    {
        if (!CanFlush) return;
        await RequestAsync(new NbdPendingRequest(CmdFlush, 0, 0), 0, default, ct);
    }

    /// <summary>
    /// The extents of <paramref name="context"/> from <paramref name="offset"/> on, in order, covering at most
    /// <paramref name="length"/> bytes (at least one extent, but possibly fewer bytes than asked: ask again from where they end).
    /// </summary>
    /// <exception cref="InvalidOperationException">The server did not agree to <paramref name="context"/>.</exception>
    /// <exception cref="IOException">The server failed the request, or the connection ended.</exception>
    public async ValueTask<IReadOnlyList<NbdExtent>> BlockStatusAsync(string context, long offset, long length, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (!_contexts.TryGetValue(context, out var id))
            throw new InvalidOperationException($"nbd server {Endpoint} export '{ExportName}' did not agree to meta context '{context}'"
                + (MetaContexts.Count == 0 ? " (it agreed to none)" : $" (only to {string.Join(", ", MetaContexts)})"));
        CheckRange(offset, length, CmdBlockStatus);
        if (length == 0) return [];
        var request = new NbdPendingRequest(CmdBlockStatus, offset, Math.Min(length, MaxRangeRequest)) { ContextId = id };
        await RequestAsync(request, 0, default, ct);
        return request.Extents!;
    }

    /// <summary>Runs <paramref name="send"/> over [offset, +length) in pieces of at most <paramref name="chunk"/> bytes, all in flight at once.</summary>
    private static async Task ChunkedAsync(long offset, long length, long chunk, Func<long, long, Task> send)
    {
        if (length == 0) return;
        if (length <= chunk)
        {
            await send(offset, length);
            return;
        }
        var pieces = new List<Task>((int)((length + chunk - 1) / chunk));
        for (long done = 0; done < length; done += chunk) pieces.Add(send(offset + done, Math.Min(chunk, length - done)));
        await Task.WhenAll(pieces);
    }

    /// <summary>Sends one request and waits for its last reply; a server error becomes an <see cref="IOException"/> naming it.</summary>
    private async Task RequestAsync(NbdPendingRequest request, ushort flags, ReadOnlyMemory<byte> payload, CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        if (Volatile.Read(ref _disposed) != 0) throw new ObjectDisposedException(nameof(NbdClient), $"the client for nbd server {Endpoint} export '{ExportName}' is disposed");
        var cookie = _inFlight.Register(request);
        var header = new byte[RequestHeader.Size];
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(RequestHeader.MagicOffset), RequestMagic);
        BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(RequestHeader.FlagsOffset), flags);
        BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(RequestHeader.TypeOffset), request.Command);
        BinaryPrimitives.WriteUInt64BigEndian(header.AsSpan(RequestHeader.HandleOffset), cookie);
        BinaryPrimitives.WriteUInt64BigEndian(header.AsSpan(RequestHeader.OffsetOffset), (ulong)request.Offset);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(RequestHeader.LengthOffset), (uint)request.Length);
        try
        {
            await _writeGate.WaitAsync(ct);
        }
        catch (OperationCanceledException)
        {
            _inFlight.Remove(cookie);
            throw;
        }
        // Disposal may have begun (and NBD_CMD_DISC gone out) while this request queued on the gate: nothing may follow it.
        if (Volatile.Read(ref _disposed) != 0 || _inFlight.ClosedReason is not null)
        {
            // The reason is read while the gate is still ours: once released, the disposal sends NBD_CMD_DISC and the
            // server's close could replace "the client disconnected" with "the server closed the connection".
            var reason = _inFlight.ClosedReason ?? Disconnected();
            _writeGate.Release();
            _inFlight.Remove(cookie);
            throw reason;
        }
        try
        {
            // Never cancelled half-way: a torn request would desynchronise the stream for everyone.
            await _stream.WriteAsync(header, CancellationToken.None);
            if (!payload.IsEmpty) await _stream.WriteAsync(payload, CancellationToken.None);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException)
        {
            _inFlight.Close(NbdClientErrors.Closed(Endpoint, ExportName, "sending failed: " + NbdClientErrors.OneLine(ex.Message), ex));
        }
        finally
        {
            _writeGate.Release();
        }
        await request.Completion;
        if (request.Error != 0)
            throw NbdClientErrors.ServerError(Endpoint, ExportName, request.Command, request.Offset, request.Length, request.Error, request.ErrorMessage);
    }

    private void CheckRange(long offset, long length, ushort command)
    {
        if (offset < 0 || length < 0 || offset > Size - length)
            throw new ArgumentOutOfRangeException(nameof(offset), FormattableString.Invariant(
                $"{NbdClientErrors.CommandName(command)} at {offset} length {length} is outside nbd export '{ExportName}' on {Endpoint} (size {Size})"));
    }

    private void CheckWritable(ushort command)
    {
        if (!IsReadOnly) return;
        var why = ServerReadOnly ? "the server exports it read-only" : "it was opened read-only";
        throw new IOException($"nbd export '{ExportName}' on {Endpoint} is read-only ({why}): {NbdClientErrors.CommandName(command)} refused") { HResult = (int)NbdError.NotPermitted };
    }

    /// <summary>
    /// Sends NBD_CMD_DISC (after which the server ends the session), closes TLS cleanly and the connection, and waits
    /// briefly for the server's side to close. Requests still waiting fail.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        if (_inFlight.ClosedReason is null)
        {
            try
            {
                using var grace = new CancellationTokenSource(DisconnectGrace);
                await _writeGate.WaitAsync(grace.Token);
                try
                {
                    await _stream.WriteAsync(DisconnectRequest(), grace.Token);
                    if (_stream is SslStream ssl) await ssl.ShutdownAsync();
                    _socket.Shutdown(SocketShutdown.Send);
                }
                finally
                {
                    _writeGate.Release();
                }
                await _reader.WaitAsync(grace.Token); // the server closes its side once it has taken the DISC
            }
            catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
            {
                // A server already gone or too slow to close: the connection is torn down below either way.
            }
        }
        _inFlight.Close(Disconnected());
        await _stream.DisposeAsync();
        await _reader; // ends on the closed stream; it never throws (failures go to the waiting requests)
        // _writeGate is never disposed: a request may still hold it or wait on it, and must end with the close reason.
    }

    /// <summary>
    /// The synchronous <see cref="DisposeAsync"/> for <see cref="NbdBlockDevice"/>'s Dispose: sends NBD_CMD_DISC only when
    /// no request is being written (never waiting for the gate, and with a short send timeout), then closes the
    /// connection without waiting for the server. Requests still waiting fail with "the client disconnected".
    /// </summary>
    internal void Disconnect()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        // A zero wait: blocking a pool thread behind a stalled writer is worse than skipping the DISC (closing the
        // socket ends the session for the server just the same).
        if (_inFlight.ClosedReason is null && _writeGate.Wait(0))
        {
            try
            {
                _socket.SendTimeout = (int)DisconnectSendTimeout.TotalMilliseconds;
                _stream.Write(DisconnectRequest());
                _socket.Shutdown(SocketShutdown.Both);
            }
            catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
            {
                // The server is already gone or not reading.
            }
            finally
            {
                _writeGate.Release();
            }
        }
        // Fail the waiters first, so a writer that the close below interrupts reports this reason, not its own.
        _inFlight.Close(Disconnected());
        _stream.Dispose();
        // The reader ends on the closed stream and never throws (its failures go to the requests), so nothing awaits it
        // here: a synchronous wait would block the caller's thread. _writeGate stays undisposed for its holders.
    }

    private IOException Disconnected() => NbdClientErrors.Closed(Endpoint, ExportName, "the client disconnected");

    private static byte[] DisconnectRequest()
    {
        var header = new byte[RequestHeader.Size];
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(RequestHeader.MagicOffset), RequestMagic);
        BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(RequestHeader.TypeOffset), CmdDisc);
        return header;
    }
}
