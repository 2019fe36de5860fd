using System.Buffers;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using static Qcow2Actors.Nbd.Protocol.NbdProtocol;

namespace Qcow2Actors.Nbd.Protocol;

/// <summary>
/// Runs transmission requests against the export: checks flags, bounds and read-only access,
/// calls the export, and hands exactly one reply per request to the <see cref="NbdReplyWriter"/>
/// (whose sender releases the request's budget after the send). A request that can get no reply
/// (the server is aborting, or an internal error) releases its budget itself and breaks the connection.
/// </summary>
internal sealed partial class NbdCommandDispatcher(
    NbdSession session,
    NbdServerOptions options,
    NbdReplyWriter replies,
    Action<long> release,
    Action markBroken,
    ILogger log,
    string peer,
    CancellationToken abort)
{
    private readonly INbdExport _export = session.Export;

    /// <summary>What one BLOCK_STATUS request is charged against the byte budget: its largest reply with the contexts selected.</summary>
    public long BlockStatusCharge { get; } = MaxBlockStatusReplyLengthFor(session.MetaContexts.Count);

    // Read hand-offs to the thread pool, reused: at most MaxInFlightRequests exist per connection.
    private readonly Lock _readWorkLock = new();
    private readonly Stack<ReadWork> _readWork = new();

    /// <summary>
    /// Starts <paramref name="request"/>; never throws. Owns <paramref name="payload"/> (a WRITE's data,
    /// rented from the shared pool) from here on.
    /// </summary>
    public void Dispatch(NbdRequest request, WritePayload? payload, long charge)
    {
        // Metrics: the request is in flight from here until its reply is framed (NbdReplyWriter) or it is abandoned.
        request = request with { Started = replies.Metrics.Start() };
        // Reads and block status leave the reader loop: they may block on the disk (a page-cache miss),
        // and the requests behind them must keep flowing. Writes, zeroes, trims and flushes run on it
        // where it may wait on the disk (MayBlock: the connection's receive thread or a pool thread): they
        // complete at once (written into the page cache, on this thread) or hand off to the engine's actors
        // and complete later, so running them here saves a thread switch per request. On the socket engine's
        // thread (shared by every connection) only writes the export starts without blocking run there
        // (TryStartWrite); the rest go to the pool (OnPoolThread says why).
        switch (request.Type)
        {
            case CmdRead:
                // A read the export can answer from memory is answered here, on the reader loop: no thread
                // hand-off for it. One that misses is started asynchronously where the export can (io_uring:
                // the reply goes from the completion thread). Only the rest go to the pool, to wait there.
                if (!TryReadNow(request, charge, out var work))
                    ThreadPool.UnsafeQueueUserWorkItem(work ?? RentReadWork(request, charge), preferLocal: false);
                break;
            case CmdBlockStatus:
                _ = BlockStatusAsync(request, charge); // yields to the pool first
                break;
            case CmdWrite when !MayBlock && TryStartWrite(request, payload, charge):
                break;
            default:
                if (MayBlock) _ = RunInlineAsync(request, payload, charge);
                else ThreadPool.UnsafeQueueUserWorkItem(static s => _ = s.Dispatcher.RunInlineAsync(s.Request, s.Payload, s.Charge),
                    (Dispatcher: this, Request: request, Payload: payload, Charge: charge), preferLocal: false);
                break;
        }
    }

    /// <summary>
    /// True when the reader loop runs on a thread-pool thread (it does unless socket completions run inline).
    /// With inline socket completions (q2a sets <c>DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS</c>), the loop runs
    /// on the socket engine's own thread, which all connections share: there only the reads that cannot block
    /// (page-cache hits, reads started on the io_uring) are answered, and anything that may wait in the kernel
    /// (a write throttled by dirty-page write-back, an O_DIRECT write, a hung disk)
    /// goes to the pool, so one stalled image does not stall every other connection.
    /// </summary>
    private static bool OnPoolThread => Thread.CurrentThread.IsThreadPoolThread;

    /// <summary>
    /// True when the reader loop runs where it may wait on the disk: a pool thread, or the connection's own receive
    /// thread (<see cref="SocketReceiver"/>), where a stuck write holds up only this connection. Writes, zeroes, trims
    /// and flushes then run here, writes through <see cref="INbdExport.WriteInlineAsync"/> (no thread hand-off at all).
    /// </summary>
    private static bool MayBlock => OnPoolThread || SocketReceiver.OnReceiveThread;

    /// <summary>Answers <paramref name="request"/> with <paramref name="error"/> without running it (a WRITE too large to read); never throws.</summary>
    public void Refuse(NbdRequest request, NbdError error, string message)
    {
        request = request with { Started = replies.Metrics.Start() };
        replies.Status(request, error, message, 0);
    }

    private static bool InRange(ulong offset, uint length, long size) =>
        offset <= (ulong)size && length <= (ulong)size - offset;

    private bool AbortedBy(Exception ex) => ex is OperationCanceledException && abort.IsCancellationRequested;

    /// <summary>The refusal of a WRITE, FLUSH, TRIM or WRITE_ZEROES, or (None, null, run) when it may go to the export.</summary>
    private (NbdError Error, string? Problem, bool Run) Check(in NbdRequest r)
    {
        var export = _export;
        switch (r.Type)
        {
            case CmdWrite:
                if (r.HasFlagsBeyond(CmdFlagFua)) return (NbdError.InvalidArgument, "unsupported flags for WRITE", false);
                if (export.IsReadOnly) return (NbdError.NotPermitted, "export is read-only", false);
                if (!InRange(r.Offset, r.Length, export.Size)) return (NbdError.NoSpace, "write beyond the end of the export", false);
                return (NbdError.None, null, r.Length != 0);
            case CmdFlush:
                if (r.HasFlagsBeyond(CmdFlagFua)) return (NbdError.InvalidArgument, "unsupported flags for FLUSH", false);
                return (NbdError.None, null, true);
            case CmdTrim:
                if (r.HasFlagsBeyond(CmdFlagFua)) return (NbdError.InvalidArgument, "unsupported flags for TRIM", false);
                if (export.IsReadOnly) return (NbdError.NotPermitted, "export is read-only", false);
                if (!InRange(r.Offset, r.Length, export.Size)) return (NbdError.InvalidArgument, "trim beyond the end of the export", false);
                return (NbdError.None, null, r.Length != 0);
            case CmdWriteZeroes:
                if (r.HasFlagsBeyond(CmdFlagFua | CmdFlagNoHole | CmdFlagFastZero)) return (NbdError.InvalidArgument, "unsupported flags for WRITE_ZEROES", false);
                if (export.IsReadOnly) return (NbdError.NotPermitted, "export is read-only", false);
                if (!InRange(r.Offset, r.Length, export.Size)) return (NbdError.NoSpace, "write zeroes beyond the end of the export", false);
                return (NbdError.None, null, r.Length != 0);
            default:
                return (NbdError.InvalidArgument, $"unknown command {r.Type}", false);
        }
    }

    /// <summary>Calls the export for a checked request.</summary>
    private ValueTask Begin(in NbdRequest r, WritePayload? payload)
    {
        var offset = (long)r.Offset;
        var fua = r.Has(CmdFlagFua);
        return r.Type switch
        {
            // Begin runs where the reader may wait on the disk (MayBlock): the export may do the write right here.
            CmdWrite => fua ? _export.WriteAsync(offset, payload!.Value.Memory, fua, abort) : _export.WriteInlineAsync(offset, payload!.Value.Memory, abort),
            CmdFlush => _export.FlushAsync(abort),
            CmdTrim => _export.TrimAsync(offset, r.Length, fua, abort),
            _ => _export.WriteZeroesAsync(offset, r.Length, mayUnmap: !r.Has(CmdFlagNoHole), fastZero: r.Has(CmdFlagFastZero), fua, abort),
        };
    }

    /// <summary>
    /// A well-formed WRITE without FUA on the socket engine's thread that the export starts without a thread waiting
    /// for the disk (<see cref="INbdExport.TryStartWrite"/>): started here, with no hand-off to the pool, and answered
    /// from where it completes. False, having started nothing, for anything else (a refusal is answered the ordinary way).
    /// </summary>
    private bool TryStartWrite(in NbdRequest r, WritePayload? payload, long charge)
    {
        ValueTask write;
        try
        {
            if (payload is not { } data || r.Has(CmdFlagFua) || Check(r) is not (NbdError.None, _, true)
                || !_export.TryStartWrite((long)r.Offset, data.Memory, abort, out write))
                return false;
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            return false; // the contract says it does not throw; if it does, the ordinary write answers
        }
        _ = RunInlineAsync(r, payload, charge, write);
        return true;
    }

    /// <summary>
    /// A WRITE, WRITE_ZEROES, TRIM or FLUSH, run on the calling thread up to its first real wait; when the export
    /// answers synchronously the reply goes at once and nothing is allocated for the await. With
    /// <paramref name="started"/>, the request was checked and started already (<see cref="TryStartWrite"/>).
    /// </summary>
    private async Task RunInlineAsync(NbdRequest r, WritePayload? payload, long charge, ValueTask? started = null)
    {
        NbdError error = NbdError.None;
        string? message = null;
        try
        {
            // Inside the try: Check reads the export's live state, which may throw, and a throw
            // here must still answer the request and release its slot.
            if (started is { } write) await write;
            else
            {
                bool run;
                (error, message, run) = Check(r);
                if (run) await Begin(r, payload);
            }
        }
        catch (Exception ex) when (!AbortedBy(ex))
        {
            (error, message) = Failure(ex);
        }
        catch (Exception ex)
        {
            ReturnPayload(payload);
            Abandon(ex, r, charge);
            return;
        }
        ReturnPayload(payload);
        replies.Status(r, error, message, charge);
    }

    /// <summary>Largest read tried on the reader loop: copying more would hold up the requests behind it.</summary>
    private const int InlineReadLimit = 64 * 1024;

    /// <summary>
    /// Answers a well-formed READ of at most <see cref="InlineReadLimit"/> bytes when the export has its data
    /// in memory (<see cref="INbdExport.TryReadNow"/>), or starts it when the export can read without a waiting
    /// thread (<see cref="INbdExport.TryStartRead"/>); true either way. False, with nothing sent, leaves it to
    /// <see cref="ReadAsync"/> (which also answers every malformed one), with <paramref name="work"/> the
    /// hand-off to use if one was rented on the way.
    /// </summary>
    private bool TryReadNow(in NbdRequest r, long charge, out ReadWork? work)
    {
        work = null;
        if (r.Length == 0 || r.Length > InlineReadLimit || r.Length > (uint)options.MaxBlockSize
            || r.HasFlagsBeyond(CmdFlagFua | CmdFlagDf) || (r.Has(CmdFlagDf) && !session.Structured)
            || !InRange(r.Offset, r.Length, _export.Size))
            return false;
        var length = (int)r.Length;
        var room = replies.ReadHeaderRoom;
        var buffer = RequestBuffers.Rent(room + length);
        bool read;
        try
        {
            read = _export.TryReadNow((long)r.Offset, buffer.AsSpan(room, length));
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            read = false; // the contract says it does not throw; if it does, the ordinary read answers
        }
        if (read)
        {
            replies.ReadData(buffer, r, charge); // the sender returns the buffer after the send
            return true;
        }
        work = RentReadWork(r, charge);
        work.Buffer = buffer;
        bool started;
        try
        {
            started = _export.TryStartRead((long)r.Offset, buffer, room, length, work);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            started = false; // as above: the ordinary read answers
        }
        if (started) return true; // the work item is the export's until its completion
        work.Buffer = null;
        RequestBuffers.Return(buffer);
        return false;
    }

    /// <summary>The reply to a started read whose data has arrived; never throws (it runs on the export's completion thread).</summary>
    private void SendStartedRead(byte[] buffer, in NbdRequest r, long charge)
    {
        try
        {
            replies.ReadData(buffer, r, charge); // the sender returns the buffer after the send
        }
        catch (Exception ex)
        {
            Abandon(ex, r, charge);
        }
    }

    private ReadWork RentReadWork(in NbdRequest request, long charge)
    {
        ReadWork? work;
        lock (_readWorkLock) _readWork.TryPop(out work);
        work ??= new ReadWork(this);
        work.Request = request;
        work.Charge = charge;
        return work;
    }

    /// <summary>
    /// One READ on its way to a pool thread (a reusable work item instead of <c>await Task.Yield()</c>, so
    /// the hop off the reader loop allocates nothing), or started by the export without a waiting thread
    /// (<see cref="Engine.IReadCompletion"/>): then its reply is sent from the completion, and a failed start
    /// goes the ordinary way on the pool, which retries or reports it.
    /// </summary>
    private sealed class ReadWork(NbdCommandDispatcher owner) : IThreadPoolWorkItem, Engine.IReadCompletion
    {
        public NbdRequest Request;
        public long Charge;
        public byte[]? Buffer;

        public void Execute()
        {
            var (request, charge) = (Request, Charge);
            lock (owner._readWorkLock) owner._readWork.Push(this);
            _ = owner.ReadAsync(request, charge);
        }

        public void OnReadCompleted(Exception? error)
        {
            var buffer = Buffer!;
            Buffer = null;
            if (error is not null)
            {
                RequestBuffers.Return(buffer);
                ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
                return;
            }
            var (request, charge) = (Request, Charge);
            lock (owner._readWorkLock) owner._readWork.Push(this);
            owner.SendStartedRead(buffer, request, charge);
        }
    }

    /// <summary>A READ, on a pool thread; nothing is allocated for the await when the export answers synchronously.</summary>
    private async Task ReadAsync(NbdRequest r, long charge)
    {
        byte[]? buffer = null;
        try
        {
            string? problem = null;
            if (r.HasFlagsBeyond(CmdFlagFua | CmdFlagDf) || (r.Has(CmdFlagDf) && !session.Structured))
                problem = "unsupported flags for READ";
            else if (r.Length > (uint)options.MaxBlockSize)
                problem = $"read of {r.Length} bytes exceeds the maximum block size";
            else if (!InRange(r.Offset, r.Length, _export.Size))
                problem = "read beyond the end of the export";
            if (problem is not null)
            {
                replies.Status(r, NbdError.InvalidArgument, problem, charge);
                return;
            }

            var length = (int)r.Length;
            if (length > InlineReadLimit && replies.SendsFiles && _export.TryPinFileRange((long)r.Offset, length) is { } pinned)
            {
                replies.ReadFile(pinned, r, charge); // the data goes from the page cache to the socket, never through a buffer
                return;
            }
            var room = replies.ReadHeaderRoom;
            buffer = RequestBuffers.Rent(room + length);
            if (length > 0)
            {
                try
                {
                    await _export.ReadAsync((long)r.Offset, buffer.AsMemory(room, length), abort);
                }
                catch (Exception ex) when (!AbortedBy(ex))
                {
                    RequestBuffers.Return(buffer);
                    buffer = null;
                    var (error, message) = Failure(ex);
                    replies.Status(r, error, message, charge);
                    return;
                }
            }
            var owned = buffer;
            buffer = null; // the sender returns it after the send
            replies.ReadData(owned, r, charge);
        }
        catch (Exception ex)
        {
            if (buffer is not null) RequestBuffers.Return(buffer);
            Abandon(ex, r, charge);
        }
    }


    private (NbdError, string) Failure(Exception ex)
    {
        var error = NbdErrors.FromException(ex);
        log.LogDebug(ex, "NBD {Peer}: export '{Export}' failed a request with {Error}", peer, _export.Name, error);
        return (error, ex.Message);
    }

    /// <summary>No reply can follow (the server is aborting, or our own bug): give the budget back and end the connection.</summary>
    private void Abandon(Exception ex, in NbdRequest r, long charge)
    {
        if (ex is not (IOException or SocketException or ObjectDisposedException or OperationCanceledException))
            log.LogError(ex, "NBD {Peer}: internal error handling command {Type}", peer, r.Type);
        replies.Metrics.Abandon(r);
        markBroken();
        release(charge);
    }

    private static void ReturnPayload(WritePayload? payload)
    {
        payload?.Return();
    }
}
