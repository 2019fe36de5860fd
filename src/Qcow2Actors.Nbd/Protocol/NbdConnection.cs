using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Extensions.Logging;
using static Qcow2Actors.Nbd.Protocol.NbdProtocol;

namespace Qcow2Actors.Nbd.Protocol;

/// <summary>
/// One client: fixed-newstyle option haggling, then the transmission phase. Requests are
/// read one after another (write payloads included, so the stream stays in step) and run
/// concurrently; each reply goes out whole under a send lock as soon as it is ready.
/// Anything that goes wrong here ends at most this connection.
/// </summary>
internal sealed class NbdConnection
{
    /// <summary>Option data beyond this is drained and refused rather than buffered.</summary>
    private const int MaxOptionLength = 64 * 1024;

    /// <summary>Cap on descriptors in one block-status reply; clients ask again from where it stops.</summary>
    private const int MaxExtentsPerReply = 64 * 1024;

    private readonly NbdServer _server;
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly PipeReader _reader;
    private readonly ILogger _log;
    private readonly CancellationToken _stopping;
    private readonly CancellationToken _abort;
    // Replies: one sender at a time; replies made while it sends, or while the reader holds the cork
    // (it has more whole requests buffered), queue up and leave together in one gather send.
    private readonly Lock _outLock = new();
    private List<(ArraySegment<byte> Data, TaskCompletionSource Done)> _outQueue = new();
    private bool _sending;
    private bool _corked;
    private readonly byte[] _header = new byte[RequestHeaderSize];
    private readonly string _peer;

    private bool _noZeroes;
    private bool _structured;
    private INbdExport? _metaExport; // export the last successful SET_META_CONTEXT selected base:allocation for
    private INbdExport _export = null!;
    private bool _metaActive;
    private SemaphoreSlim _slots = null!;
    private AsyncByteGate _bytes = null!;
    private int _maxSlots;
    private volatile bool _broken;
    private CancellationToken _handshake; // server stop or the handshake deadline, whichever comes first

    public NbdConnection(NbdServer server, Socket socket, ILogger log, CancellationToken stopping, CancellationToken abort)
    {
        _server = server;
        _socket = socket;
        _log = log;
        _stopping = stopping;
        _abort = abort;
        _peer = socket.RemoteEndPoint?.ToString() is { Length: > 0 } p ? p : "unix-client";
        _stream = new NetworkStream(socket, ownsSocket: false);
        _reader = PipeReader.Create(_stream, new StreamPipeReaderOptions(bufferSize: 64 * 1024, minimumReadSize: 16 * 1024, leaveOpen: true));
    }

    private NbdServerOptions Options => _server.Options;

    /// <summary>Serves the client until it leaves, misbehaves, or the server stops; never throws.</summary>
    public async Task RunAsync()
    {
        try
        {
            if (await NegotiateAsync()) await TransmissionAsync();
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested || _abort.IsCancellationRequested)
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
            await _reader.CompleteAsync();
            try { _socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
            _socket.Dispose();
            await _stream.DisposeAsync();
        }
    }

    /// <summary>Closes the socket at once, failing any pending read or send; used on hard abort.</summary>
    public void Abort()
    {
        _broken = true;
        try { _socket.Dispose(); } catch (ObjectDisposedException) { }
    }

    // ---------------------------------------------------------------- handshake

    /// <summary>
    /// The handshake under <see cref="NbdServerOptions.HandshakeTimeout"/>: a client that has not
    /// chosen an export by then is dropped, so idle connections cannot pile up to the fd limit.
    /// </summary>
    private async Task<bool> NegotiateAsync()
    {
        var timeout = Options.HandshakeTimeout;
        using var deadline = timeout > TimeSpan.Zero
            ? new CancellationTokenSource(timeout, Options.TimeProvider)
            : new CancellationTokenSource();
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(_stopping, deadline.Token);
        _handshake = linked.Token;
        try
        {
            return await HandshakeAsync();
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested && !_stopping.IsCancellationRequested)
        {
            _server.ReportHandshakeTimeout(_peer);
            return false;
        }
        finally
        {
            _handshake = _stopping;
        }
    }

    /// <summary>Option haggling; true when the client entered transmission with <see cref="_export"/>.</summary>
    private async Task<bool> HandshakeAsync()
    {
        var hello = new byte[18];
        BinaryPrimitives.WriteUInt64BigEndian(hello, InitPasswd);
        BinaryPrimitives.WriteUInt64BigEndian(hello.AsSpan(8), OptMagic);
        BinaryPrimitives.WriteUInt16BigEndian(hello.AsSpan(16), FlagFixedNewstyle | FlagNoZeroes);
        await _stream.WriteAsync(hello, _handshake);

        var four = new byte[4];
        if (!await ReadExactAsync(four, allowEof: true, _handshake)) return false;
        var clientFlags = BinaryPrimitives.ReadUInt32BigEndian(four);
        if ((clientFlags & ~(ClientFlagFixedNewstyle | ClientFlagNoZeroes)) != 0)
        {
            _log.LogInformation("NBD {Peer}: unknown client flags 0x{Flags:x}; disconnecting", _peer, clientFlags);
            return false;
        }
        _noZeroes = (clientFlags & ClientFlagNoZeroes) != 0;

        var optHeader = new byte[16];
        while (true)
        {
            if (!await ReadExactAsync(optHeader, allowEof: true, _handshake)) return false;
            if (BinaryPrimitives.ReadUInt64BigEndian(optHeader) != OptMagic)
            {
                _log.LogInformation("NBD {Peer}: bad option magic; disconnecting", _peer);
                return false;
            }
            var option = BinaryPrimitives.ReadUInt32BigEndian(optHeader.AsSpan(8));
            var length = BinaryPrimitives.ReadUInt32BigEndian(optHeader.AsSpan(12));
            if (length > MaxOptionLength)
            {
                await DrainAsync(length);
                await SendOptionErrorAsync(option, RepErrTooBig, "option data too large");
                continue;
            }
            var data = new byte[length];
            await ReadExactAsync(data, allowEof: false, _handshake);

            switch (option)
            {
                case OptExportName:
                    return await ExportNameAsync(data);
                case OptAbort:
                    await SendOptionReplyAsync(option, RepAck, default);
                    return false;
                case OptList:
                    await ListAsync(data);
                    break;
                case OptInfo:
                case OptGo:
                    if (await InfoOrGoAsync(option, data)) return true;
                    break;
                case OptStructuredReply:
                    if (length != 0) await SendOptionErrorAsync(option, RepErrInvalid, "STRUCTURED_REPLY takes no data");
                    else
                    {
                        _structured = true;
                        await SendOptionReplyAsync(option, RepAck, default);
                    }
                    break;
                case OptListMetaContext:
                case OptSetMetaContext:
                    await MetaContextAsync(option, data);
                    break;
                default:
                    // STARTTLS lands here too: this server runs in NOTLS mode.
                    await SendOptionErrorAsync(option, RepErrUnsup, $"option {option} is not supported");
                    break;
            }
        }
    }

    private async Task<bool> ExportNameAsync(byte[] data)
    {
        var export = data.Length <= MaxStringLength ? _server.FindExport(Encoding.UTF8.GetString(data)) : null;
        if (export is null)
        {
            // EXPORT_NAME cannot carry an error; the protocol says to drop the session.
            _log.LogInformation("NBD {Peer}: EXPORT_NAME for unknown export; disconnecting", _peer);
            return false;
        }
        var reply = new byte[_noZeroes ? 10 : 134];
        BinaryPrimitives.WriteUInt64BigEndian(reply, (ulong)export.Size);
        BinaryPrimitives.WriteUInt16BigEndian(reply.AsSpan(8), TransmissionFlags(export));
        await _stream.WriteAsync(reply, _handshake);
        EnterTransmission(export);
        return true;
    }

    private async Task ListAsync(byte[] data)
    {
        if (data.Length != 0)
        {
            await SendOptionErrorAsync(OptList, RepErrInvalid, "LIST takes no data");
            return;
        }
        foreach (var export in _server.Exports)
        {
            var name = Encoding.UTF8.GetBytes(export.Name);
            var description = Encoding.UTF8.GetBytes(export.Description ?? "");
            var payload = new byte[4 + name.Length + description.Length];
            BinaryPrimitives.WriteUInt32BigEndian(payload, (uint)name.Length);
            name.CopyTo(payload, 4);
            description.CopyTo(payload, 4 + name.Length);
            await SendOptionReplyAsync(OptList, RepServer, payload);
        }
        await SendOptionReplyAsync(OptList, RepAck, default);
    }

    private async Task<bool> InfoOrGoAsync(uint option, byte[] data)
    {
        if (data.Length < 6)
        {
            await SendOptionErrorAsync(option, RepErrInvalid, "option data too short");
            return false;
        }
        var nameLength = BinaryPrimitives.ReadUInt32BigEndian(data);
        if (nameLength > data.Length - 6 || nameLength > MaxStringLength)
        {
            await SendOptionErrorAsync(option, RepErrInvalid, "export name length out of range");
            return false;
        }
        var name = Encoding.UTF8.GetString(data, 4, (int)nameLength);
        var p = 4 + (int)nameLength;
        var count = BinaryPrimitives.ReadUInt16BigEndian(data.AsSpan(p));
        p += 2;
        if (data.Length != p + 2 * count)
        {
            await SendOptionErrorAsync(option, RepErrInvalid, "information request list does not match the option length");
            return false;
        }
        var requested = new HashSet<ushort>();
        for (var i = 0; i < count; i++) requested.Add(BinaryPrimitives.ReadUInt16BigEndian(data.AsSpan(p + 2 * i)));

        var export = _server.FindExport(name);
        if (export is null)
        {
            await SendOptionErrorAsync(option, RepErrUnknown, $"no export named '{name}'");
            return false;
        }

        var info = new byte[12];
        BinaryPrimitives.WriteUInt16BigEndian(info, InfoExport);
        BinaryPrimitives.WriteUInt64BigEndian(info.AsSpan(2), (ulong)export.Size);
        BinaryPrimitives.WriteUInt16BigEndian(info.AsSpan(10), TransmissionFlags(export));
        await SendOptionReplyAsync(option, RepInfo, info);

        if (requested.Contains(InfoName)) await SendInfoStringAsync(option, InfoName, export.Name);
        if (requested.Contains(InfoDescription) && export.Description is { } description)
            await SendInfoStringAsync(option, InfoDescription, description);

        // Sent unasked too: clients ignore info they did not request, and ours are the defaults anyway.
        var sizes = new byte[14];
        BinaryPrimitives.WriteUInt16BigEndian(sizes, InfoBlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(2), 1);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(6), 4096);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(10), (uint)Options.MaxBlockSize);
        await SendOptionReplyAsync(option, RepInfo, sizes);

        await SendOptionReplyAsync(option, RepAck, default);
        if (option != OptGo) return false;
        EnterTransmission(export);
        return true;
    }

    private async Task SendInfoStringAsync(uint option, ushort type, string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var payload = new byte[2 + bytes.Length];
        BinaryPrimitives.WriteUInt16BigEndian(payload, type);
        bytes.CopyTo(payload, 2);
        await SendOptionReplyAsync(option, RepInfo, payload);
    }

    private async Task MetaContextAsync(uint option, byte[] data)
    {
        var set = option == OptSetMetaContext;
        if (set) _metaExport = null; // a SET replaces the selection even when it fails
        if (!_structured)
        {
            await SendOptionErrorAsync(option, RepErrInvalid, "negotiate structured replies first");
            return;
        }
        if (!TryParseMetaQuery(data, out var name, out var queries))
        {
            await SendOptionErrorAsync(option, RepErrInvalid, "malformed metadata context request");
            return;
        }
        var export = _server.FindExport(name);
        if (export is null)
        {
            await SendOptionErrorAsync(option, RepErrUnknown, $"no export named '{name}'");
            return;
        }

        // base:allocation is our only context. LIST treats no query and "base:" as wildcards;
        // SET selects only the exact name. Unknown namespaces and leaves are ignored, as required.
        var match = set
            ? queries.Contains(BaseAllocation)
            : queries.Count == 0 || queries.Contains("base:") || queries.Contains(BaseAllocation);
        if (match)
        {
            var nameBytes = Encoding.UTF8.GetBytes(BaseAllocation);
            var payload = new byte[4 + nameBytes.Length];
            BinaryPrimitives.WriteUInt32BigEndian(payload, set ? BaseAllocationId : 0);
            nameBytes.CopyTo(payload, 4);
            await SendOptionReplyAsync(option, RepMetaContext, payload);
            if (set) _metaExport = export;
        }
        await SendOptionReplyAsync(option, RepAck, default);
    }

    private static bool TryParseMetaQuery(byte[] data, out string exportName, out List<string> queries)
    {
        exportName = "";
        queries = [];
        if (data.Length < 8) return false;
        var nameLength = BinaryPrimitives.ReadUInt32BigEndian(data);
        if (nameLength > data.Length - 8 || nameLength > MaxStringLength) return false;
        exportName = Encoding.UTF8.GetString(data, 4, (int)nameLength);
        var p = 4 + (int)nameLength;
        var count = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(p));
        p += 4;
        for (uint i = 0; i < count; i++)
        {
            if (data.Length - p < 4) return false;
            var queryLength = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(p));
            p += 4;
            if (queryLength > data.Length - p || queryLength > MaxStringLength) return false;
            queries.Add(Encoding.UTF8.GetString(data, p, (int)queryLength));
            p += (int)queryLength;
        }
        return p == data.Length;
    }

    private ushort TransmissionFlags(INbdExport export)
    {
        var flags = (ushort)(FlagHasFlags | FlagSendFlush | FlagSendFua | FlagCanMultiConn);
        flags |= export.IsReadOnly
            ? FlagReadOnly
            : (ushort)(FlagSendTrim | FlagSendWriteZeroes | FlagSendFastZero);
        // Every read reply is a single content chunk, so "don't fragment" costs nothing.
        if (_structured) flags |= FlagSendDf;
        return flags;
    }

    private void EnterTransmission(INbdExport export)
    {
        _export = export;
        _metaActive = _structured && ReferenceEquals(_metaExport, export);
        _maxSlots = Math.Max(1, Options.MaxInFlightRequests);
        _slots = new SemaphoreSlim(_maxSlots, _maxSlots);
        _bytes = new AsyncByteGate(Math.Max(1, Options.MaxInFlightBytes));
        _log.LogDebug("NBD {Peer}: serving '{Export}' (structured={Structured})", _peer, export.Name, _structured);
    }

    private async Task SendOptionReplyAsync(uint option, uint type, ReadOnlyMemory<byte> data)
    {
        var buffer = new byte[20 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(buffer, OptReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(buffer.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(buffer.AsSpan(12), type);
        BinaryPrimitives.WriteUInt32BigEndian(buffer.AsSpan(16), (uint)data.Length);
        data.Span.CopyTo(buffer.AsSpan(20));
        await _stream.WriteAsync(buffer, _handshake);
    }

    private Task SendOptionErrorAsync(uint option, uint type, string message) =>
        SendOptionReplyAsync(option, type, Encoding.UTF8.GetBytes(message));

    private async Task DrainAsync(long length)
    {
        while (length > 0)
        {
            var result = await _reader.ReadAsync(_handshake);
            var take = Math.Min(length, result.Buffer.Length);
            _reader.AdvanceTo(result.Buffer.GetPosition(take));
            length -= take;
            if (length > 0 && result.IsCompleted) throw new EndOfStreamException("client closed while sending option data");
        }
    }

    /// <summary>
    /// Fills <paramref name="destination"/> from the socket. Returns false only when the peer closed
    /// cleanly before the first byte and <paramref name="allowEof"/> is set; a close part-way throws.
    /// </summary>
    private async ValueTask<bool> ReadExactAsync(Memory<byte> destination, bool allowEof, CancellationToken cancellationToken)
    {
        var copied = 0;
        while (copied < destination.Length)
        {
            var result = await _reader.ReadAsync(cancellationToken);
            var buffer = result.Buffer;
            var take = (int)Math.Min(buffer.Length, destination.Length - copied);
            buffer.Slice(0, take).CopyTo(destination.Span[copied..]);
            copied += take;
            _reader.AdvanceTo(buffer.GetPosition(take));
            if (copied < destination.Length && result.IsCompleted)
            {
                if (copied == 0 && allowEof) return false;
                throw new EndOfStreamException($"client closed after {copied} of {destination.Length} bytes");
            }
        }
        return true;
    }

    // ---------------------------------------------------------------- transmission

    private readonly record struct Request(ushort Flags, ushort Type, ulong Handle, ulong Offset, uint Length);

    private async Task TransmissionAsync()
    {
        try
        {
            await ReadRequestsAsync();
        }
        finally
        {
            // Let every request already read finish and reply, so a DISC, a hang-up or a graceful
            // stop never drops acknowledged work on the floor; only a hard abort cuts this short.
            for (var i = 0; i < _maxSlots; i++) await _slots.WaitAsync(_abort);
        }
    }

    private async Task ReadRequestsAsync()
    {
        try
        {
            await ReadRequestsLoopAsync();
        }
        finally
        {
            Uncork();
        }
    }

    /// <summary>True when a whole request (header and any write payload) is already buffered, so reading it will not wait.</summary>
    private bool HasBufferedRequest()
    {
        if (!_reader.TryRead(out var result)) return false;
        var buffer = result.Buffer;
        bool whole = false;
        if (buffer.Length >= RequestHeaderSize)
        {
            Span<byte> header = stackalloc byte[RequestHeaderSize];
            buffer.Slice(0, RequestHeaderSize).CopyTo(header);
            long need = RequestHeaderSize;
            if (BinaryPrimitives.ReadUInt16BigEndian(header[6..]) == CmdWrite) need += BinaryPrimitives.ReadUInt32BigEndian(header[24..]);
            whole = buffer.Length >= need;
        }
        _reader.AdvanceTo(buffer.Start);
        return whole;
    }

    private async Task ReadRequestsLoopAsync()
    {
        while (!_broken)
        {
            // Hold replies back while more requests are already here; send them all at once before waiting.
            if (HasBufferedRequest()) Cork();
            else Uncork();
            bool gotHeader;
            try
            {
                gotHeader = await ReadExactAsync(_header, allowEof: true, _stopping);
            }
            catch (EndOfStreamException)
            {
                _log.LogInformation("NBD {Peer}: truncated request header; disconnecting", _peer);
                return;
            }
            if (!gotHeader)
            {
                _log.LogDebug("NBD {Peer}: client hung up", _peer);
                return;
            }

            if (BinaryPrimitives.ReadUInt32BigEndian(_header) != RequestMagic)
            {
                // Once framing is lost nothing after it can be trusted.
                _log.LogInformation("NBD {Peer}: bad request magic 0x{Magic:x8}; disconnecting", _peer, BinaryPrimitives.ReadUInt32BigEndian(_header));
                return;
            }
            var request = new Request(
                BinaryPrimitives.ReadUInt16BigEndian(_header.AsSpan(4)),
                BinaryPrimitives.ReadUInt16BigEndian(_header.AsSpan(6)),
                BinaryPrimitives.ReadUInt64BigEndian(_header.AsSpan(8)),
                BinaryPrimitives.ReadUInt64BigEndian(_header.AsSpan(16)),
                BinaryPrimitives.ReadUInt32BigEndian(_header.AsSpan(24)));

            if (request.Type == CmdDisc)
            {
                _log.LogDebug("NBD {Peer}: soft disconnect", _peer);
                return;
            }
            if (request.Type == CmdWrite && request.Length > (uint)Options.MaxBlockSize)
            {
                _log.LogInformation("NBD {Peer}: write of {Length} bytes exceeds the {Max} byte limit; disconnecting", _peer, request.Length, Options.MaxBlockSize);
                return;
            }

            var slot = _slots.WaitAsync(_stopping);
            if (!slot.IsCompleted) Uncork(); // the slots free up only as replies leave
            await slot;
            long charge = 0;
            byte[]? payload = null;
            try
            {
                if (request.Type is CmdRead or CmdWrite)
                {
                    var want = Math.Min(Math.Min(request.Length, (uint)Options.MaxBlockSize), Math.Max(1, Options.MaxInFlightBytes));
                    var gate = _bytes.WaitAsync(want, _stopping);
                    if (!gate.IsCompleted) Uncork();
                    await gate;
                    charge = want;
                }
                if (request.Type == CmdWrite)
                {
                    payload = ArrayPool<byte>.Shared.Rent((int)request.Length);
                    try
                    {
                        await ReadExactAsync(payload.AsMemory(0, (int)request.Length), allowEof: false, _stopping);
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
                if (payload is not null) ArrayPool<byte>.Shared.Return(payload);
                _bytes.Release(charge);
                _slots.Release();
                if (_stopping.IsCancellationRequested) return;
                throw;
            }

            _ = ExecuteAsync(request, payload, charge);
        }
    }

    private async Task ExecuteAsync(Request request, byte[]? payload, long charge)
    {
        try
        {
            // Reads and block status leave the reader loop: they may block on the disk (a page-cache miss),
            // and the requests behind them must keep flowing. Writes, zeroes, trims and flushes start on it:
            // they either complete at once (an owned cluster written into the page cache) or hand off to
            // the engine's actors and complete later, so running them here saves a thread switch per request.
            if (request.Type is CmdRead or CmdBlockStatus) await Task.Yield();
            switch (request.Type)
            {
                case CmdRead:
                    await ReadCommandAsync(request);
                    break;
                case CmdBlockStatus:
                    await BlockStatusCommandAsync(request);
                    break;
                default:
                    var error = await RunCommandAsync(request, payload);
                    await SendStatusAsync(request, error.Error, error.Message);
                    break;
            }
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
        {
            // The reply could not be sent: the client is gone or the server is aborting.
            MarkBroken();
        }
        catch (Exception ex)
        {
            _log.LogError(ex, "NBD {Peer}: internal error handling command {Type}", _peer, request.Type);
            MarkBroken();
        }
        finally
        {
            if (payload is not null) ArrayPool<byte>.Shared.Return(payload);
            _bytes.Release(charge);
            _slots.Release();
        }
    }

    /// <summary>After a failed send the reply stream is out of step; close so the reader loop ends too.</summary>
    private void MarkBroken()
    {
        if (_broken) return;
        _broken = true;
        try { _socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
    }

    private static bool InRange(ulong offset, uint length, long size) =>
        offset <= (ulong)size && length <= (ulong)size - offset;

    private async Task<(NbdError Error, string? Message)> RunCommandAsync(Request r, byte[]? payload)
    {
        var export = _export;
        var offset = (long)r.Offset;
        switch (r.Type)
        {
            case CmdWrite:
                if ((r.Flags & ~CmdFlagFua) != 0) return (NbdError.InvalidArgument, "unsupported flags for WRITE");
                if (export.IsReadOnly) return (NbdError.NotPermitted, "export is read-only");
                if (!InRange(r.Offset, r.Length, export.Size)) return (NbdError.NoSpace, "write beyond the end of the export");
                if (r.Length == 0) return (NbdError.None, null);
                return await CallExportAsync(() => export.WriteAsync(offset, payload.AsMemory(0, (int)r.Length), (r.Flags & CmdFlagFua) != 0, _abort));

            case CmdFlush:
                if ((r.Flags & ~CmdFlagFua) != 0) return (NbdError.InvalidArgument, "unsupported flags for FLUSH");
                return await CallExportAsync(() => export.FlushAsync(_abort));

            case CmdTrim:
                if ((r.Flags & ~CmdFlagFua) != 0) return (NbdError.InvalidArgument, "unsupported flags for TRIM");
                if (export.IsReadOnly) return (NbdError.NotPermitted, "export is read-only");
                if (!InRange(r.Offset, r.Length, export.Size)) return (NbdError.InvalidArgument, "trim beyond the end of the export");
                if (r.Length == 0) return (NbdError.None, null);
                return await CallExportAsync(() => export.TrimAsync(offset, r.Length, (r.Flags & CmdFlagFua) != 0, _abort));

            case CmdWriteZeroes:
                if ((r.Flags & ~(CmdFlagFua | CmdFlagNoHole | CmdFlagFastZero)) != 0) return (NbdError.InvalidArgument, "unsupported flags for WRITE_ZEROES");
                if (export.IsReadOnly) return (NbdError.NotPermitted, "export is read-only");
                if (!InRange(r.Offset, r.Length, export.Size)) return (NbdError.NoSpace, "write zeroes beyond the end of the export");
                if (r.Length == 0) return (NbdError.None, null);
                return await CallExportAsync(() => export.WriteZeroesAsync(
                    offset, r.Length,
                    mayUnmap: (r.Flags & CmdFlagNoHole) == 0,
                    fastZero: (r.Flags & CmdFlagFastZero) != 0,
                    fua: (r.Flags & CmdFlagFua) != 0,
                    _abort));

            default:
                return (NbdError.InvalidArgument, $"unknown command {r.Type}");
        }
    }

    private async Task<(NbdError, string?)> CallExportAsync(Func<ValueTask> call)
    {
        try
        {
            await call();
            return (NbdError.None, null);
        }
        catch (Exception ex) when (!(ex is OperationCanceledException && _abort.IsCancellationRequested))
        {
            return Failure(ex);
        }
    }

    private (NbdError, string) Failure(Exception ex)
    {
        var error = NbdErrors.FromException(ex);
        _log.LogDebug(ex, "NBD {Peer}: export '{Export}' failed a request with {Error}", _peer, _export.Name, error);
        return (error, ex.Message);
    }

    private async Task ReadCommandAsync(Request r)
    {
        var export = _export;
        string? problem = null;
        if ((r.Flags & ~(CmdFlagFua | CmdFlagDf)) != 0 || ((r.Flags & CmdFlagDf) != 0 && !_structured))
            problem = "unsupported flags for READ";
        else if (r.Length > (uint)Options.MaxBlockSize)
            problem = $"read of {r.Length} bytes exceeds the maximum block size";
        else if (!InRange(r.Offset, r.Length, export.Size))
            problem = "read beyond the end of the export";
        if (problem is not null)
        {
            await SendStatusAsync(r, NbdError.InvalidArgument, problem);
            return;
        }

        var length = (int)r.Length;
        // Room in front of the data for the largest reply header, so the reply leaves in one send.
        var headerRoom = _structured ? ChunkHeaderSize + 8 : SimpleReplySize;
        var buffer = ArrayPool<byte>.Shared.Rent(headerRoom + length);
        try
        {
            NbdError error = NbdError.None;
            string? message = null;
            if (length > 0)
            {
                try
                {
                    await export.ReadAsync((long)r.Offset, buffer.AsMemory(headerRoom, length), _abort);
                }
                catch (Exception ex) when (!(ex is OperationCanceledException && _abort.IsCancellationRequested))
                {
                    (error, message) = Failure(ex);
                }
            }
            if (error != NbdError.None)
            {
                await SendStatusAsync(r, error, message);
                return;
            }

            if (!_structured)
            {
                WriteSimpleHeader(buffer, NbdError.None, r.Handle);
                await SendAsync(buffer.AsMemory(0, SimpleReplySize + length));
            }
            else if (length == 0)
            {
                await SendChunkAsync(r.Handle, ReplyTypeNone, default);
            }
            else if (!buffer.AsSpan(headerRoom, length).ContainsAnyExcept((byte)0))
            {
                // All zeroes: a hole chunk saves the client reading (and us sending) the bytes.
                var hole = new byte[12];
                BinaryPrimitives.WriteUInt64BigEndian(hole, r.Offset);
                BinaryPrimitives.WriteUInt32BigEndian(hole.AsSpan(8), r.Length);
                await SendChunkAsync(r.Handle, ReplyTypeOffsetHole, hole);
            }
            else
            {
                WriteChunkHeader(buffer, ReplyTypeOffsetData, r.Handle, 8 + (uint)length);
                BinaryPrimitives.WriteUInt64BigEndian(buffer.AsSpan(ChunkHeaderSize), r.Offset);
                await SendAsync(buffer.AsMemory(0, headerRoom + length));
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private async Task BlockStatusCommandAsync(Request r)
    {
        var export = _export;
        string? problem = null;
        if (!_metaActive) problem = "no metadata context was negotiated";
        else if ((r.Flags & ~(CmdFlagFua | CmdFlagReqOne)) != 0) problem = "unsupported flags for BLOCK_STATUS";
        else if (r.Length == 0) problem = "zero-length block status";
        else if (!InRange(r.Offset, r.Length, export.Size)) problem = "block status beyond the end of the export";
        if (problem is not null)
        {
            await SendStatusAsync(r, NbdError.InvalidArgument, problem);
            return;
        }

        IReadOnlyList<NbdExtent> extents;
        try
        {
            extents = await export.GetBlockStatusAsync((long)r.Offset, r.Length, _abort);
        }
        catch (Exception ex) when (!(ex is OperationCanceledException && _abort.IsCancellationRequested))
        {
            var (error, message) = Failure(ex);
            await SendStatusAsync(r, error, message);
            return;
        }

        var reqOne = (r.Flags & CmdFlagReqOne) != 0;
        var descriptors = new List<(uint Length, uint Flags)>();
        long remaining = r.Length;
        foreach (var extent in extents)
        {
            if (extent.Length <= 0) break; // a malformed tail: report what we have
            var take = (uint)Math.Min(extent.Length, remaining);
            var flags = (uint)extent.Flags & (uint)(NbdExtentFlags.Hole | NbdExtentFlags.Zero);
            if (descriptors.Count > 0 && descriptors[^1].Flags == flags)
                descriptors[^1] = (descriptors[^1].Length + take, flags);
            else if (descriptors.Count < MaxExtentsPerReply)
                descriptors.Add((take, flags));
            else
                break;
            remaining -= take;
            if (remaining == 0 || reqOne) break;
        }
        // "Allocated, contents unknown" is always a truthful answer when the export said nothing.
        if (descriptors.Count == 0) descriptors.Add((r.Length, 0));
        if (reqOne && descriptors.Count > 1) descriptors.RemoveRange(1, descriptors.Count - 1);

        var payload = new byte[4 + 8 * descriptors.Count];
        BinaryPrimitives.WriteUInt32BigEndian(payload, BaseAllocationId);
        for (var i = 0; i < descriptors.Count; i++)
        {
            BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(4 + 8 * i), descriptors[i].Length);
            BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(8 + 8 * i), descriptors[i].Flags);
        }
        await SendChunkAsync(r.Handle, ReplyTypeBlockStatus, payload);
    }

    /// <summary>A payload-free reply: simple when that is allowed, a structured error chunk (with the message) otherwise.</summary>
    private async Task SendStatusAsync(Request r, NbdError error, string? message)
    {
        if (_structured && (error != NbdError.None || r.Type is CmdRead or CmdBlockStatus))
        {
            if (error == NbdError.None)
            {
                await SendChunkAsync(r.Handle, ReplyTypeNone, default);
                return;
            }
            var text = Encoding.UTF8.GetBytes(message ?? "");
            if (text.Length > MaxStringLength) text = text[..MaxStringLength];
            var payload = new byte[6 + text.Length];
            BinaryPrimitives.WriteUInt32BigEndian(payload, (uint)error);
            BinaryPrimitives.WriteUInt16BigEndian(payload.AsSpan(4), (ushort)text.Length);
            text.CopyTo(payload, 6);
            await SendChunkAsync(r.Handle, ReplyTypeError, payload);
            return;
        }
        var reply = new byte[SimpleReplySize];
        WriteSimpleHeader(reply, error, r.Handle);
        await SendAsync(reply);
    }

    private async Task SendChunkAsync(ulong handle, ushort type, ReadOnlyMemory<byte> payload)
    {
        var buffer = new byte[ChunkHeaderSize + payload.Length];
        WriteChunkHeader(buffer, type, handle, (uint)payload.Length);
        payload.Span.CopyTo(buffer.AsSpan(ChunkHeaderSize));
        await SendAsync(buffer);
    }

    private static void WriteSimpleHeader(Span<byte> buffer, NbdError error, ulong handle)
    {
        BinaryPrimitives.WriteUInt32BigEndian(buffer, SimpleReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(buffer[4..], (uint)error);
        BinaryPrimitives.WriteUInt64BigEndian(buffer[8..], handle);
    }

    /// <summary>Every chunk we send is the last of its reply: one content chunk, or one error, or one status list.</summary>
    private static void WriteChunkHeader(Span<byte> buffer, ushort type, ulong handle, uint length)
    {
        BinaryPrimitives.WriteUInt32BigEndian(buffer, StructuredReplyMagic);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[4..], ReplyFlagDone);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[6..], type);
        BinaryPrimitives.WriteUInt64BigEndian(buffer[8..], handle);
        BinaryPrimitives.WriteUInt32BigEndian(buffer[16..], length);
    }

    private Task SendAsync(ReadOnlyMemory<byte> message)
    {
        if (!MemoryMarshal.TryGetArray(message, out var segment)) segment = message.ToArray();
        lock (_outLock)
        {
            if (_broken) return Task.FromException(new IOException("connection already failed"));
            if (_sending || _corked)
            {
                var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                _outQueue.Add((segment, done));
                return done.Task;
            }
            _sending = true;
        }
        return SendThenDrainAsync(segment);
    }

    private async Task SendThenDrainAsync(ArraySegment<byte> segment)
    {
        try
        {
            await SendAllAsync(segment);
        }
        catch
        {
            FailQueued();
            throw;
        }
        _ = DrainAsync();
    }

    private async Task SendAllAsync(ArraySegment<byte> segment)
    {
        var memory = segment.AsMemory();
        while (memory.Length > 0)
        {
            int n = await _socket.SendAsync(memory, SocketFlags.None, _abort);
            memory = memory[n..];
        }
    }

    /// <summary>Runs while this caller owns the sender: sends what queued up, in order, a batch per send.</summary>
    private async Task DrainAsync()
    {
        while (true)
        {
            List<(ArraySegment<byte> Data, TaskCompletionSource Done)> batch;
            lock (_outLock)
            {
                if (_outQueue.Count == 0 || _corked)
                {
                    _sending = false;
                    return;
                }
                batch = _outQueue;
                _outQueue = new();
            }
            try
            {
                if (batch.Count == 1) await SendAllAsync(batch[0].Data);
                else
                {
                    var segments = new List<ArraySegment<byte>>(batch.Count);
                    long total = 0;
                    foreach (var item in batch) { segments.Add(item.Data); total += item.Data.Count; }
                    long sent = await _socket.SendAsync(segments, SocketFlags.None);
                    // A stream socket sends it all; should it ever stop short, send the rest in order.
                    foreach (var item in batch)
                    {
                        if (sent >= item.Data.Count) { sent -= item.Data.Count; continue; }
                        await SendAllAsync(item.Data.Slice((int)sent));
                        sent = 0;
                    }
                }
            }
            catch (Exception ex)
            {
                foreach (var item in batch) item.Done.TrySetException(ex);
                FailQueued();
                return;
            }
            foreach (var item in batch) item.Done.TrySetResult();
        }
    }

    /// <summary>The connection cannot send any more: fail every queued reply (their requests end with the connection).</summary>
    private void FailQueued()
    {
        List<(ArraySegment<byte> Data, TaskCompletionSource Done)> queued;
        lock (_outLock)
        {
            _broken = true;
            _sending = false;
            queued = _outQueue;
            _outQueue = new();
        }
        var error = new IOException("connection already failed");
        foreach (var item in queued) item.Done.TrySetException(error);
    }

    private void Cork()
    {
        lock (_outLock) _corked = true;
    }

    private void Uncork()
    {
        lock (_outLock)
        {
            if (!_corked) return;
            _corked = false;
            if (_sending || _outQueue.Count == 0) return;
            _sending = true;
        }
        _ = DrainAsync();
    }
}
