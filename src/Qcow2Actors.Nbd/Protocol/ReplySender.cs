using System.Buffers;
using System.Net.Sockets;
using System.Runtime.CompilerServices;

namespace Qcow2Actors.Nbd.Protocol;

/// <summary>
/// Puts whole replies on the socket, one sender at a time, in the order they were handed over.
/// Replies made while a send is under way, or while the reader holds the cork (it has more whole
/// requests buffered), queue up and leave together: small ones copied into one buffer, large ones
/// in one gather send, so a pipelined batch costs one system call rather than one per reply. A small reply that
/// finds nothing to join may also wait briefly for the connection's other running requests (<see cref="ReplyHold"/>).
/// After each send the reply's buffer goes back to the pool and its request's budget is released.
/// On a TLS connection (<paramref name="tls"/> set) the same batches go through the TLS stream instead
/// of the socket; a plain connection writes to the socket directly, with no stream in between (and a failed send
/// is a value, <see cref="SocketCallArgs"/>: a client that resets the connection costs no stack trace).
/// </summary>
internal sealed class ReplySender(Socket socket, Stream? tls, Action<long> released, Action broken, TimeProvider time, CancellationToken abort) : IDisposable
{
    /// <summary>Batches up to this many bytes are copied into one buffer; larger ones go out as a gather send.</summary>
    private const int CoalesceLimit = 16 * 1024;

    private readonly Lock _lock = new();
    private List<OutgoingReply> _queue = new();
    private List<OutgoingReply> _spare = new(); // the drainer's, swapped with _queue under the lock
    private readonly List<ArraySegment<byte>> _segments = new();
    // The plain socket's one send at a time (none on TLS, which writes through its stream and takes the abort token
    // there); a hard abort disposes the socket, which ends a plain send in progress.
    private readonly SocketCallArgs? _call = tls is null ? new SocketCallArgs() : null;
    private bool _sending;
    private bool _corked;
    private bool _broken;
    // A send has waited longer than PinGrace for the client to make room: file replies are copied, not queued pinned.
    private bool _stalled;
    // The drainer's batch with file replies, the first of them not started yet, and the one whose send waits for room.
    private List<OutgoingReply>? _current;
    private int _unsentFrom;
    private FileReplyBody? _waitingBody;
    // Orders the grace timer's copies against the drainer's return from its wait (_waiting says it still waits) and
    // against Dispose (_disposed: no timer any more, none created).
    private readonly Lock _copyLock = new();
    private bool _waiting;
    private bool _disposed;
    private ITimer? _graceTimer;
    private readonly ReplyHold _hold = new();
    private ITimer? _holdTimer; // made and armed under _copyLock, as the grace timer is, so Dispose ends both
    private readonly byte[] _one = new byte[1];

    /// <summary>Called each time a send starts waiting for the client to make room, after old pins were copied (tests).</summary>
    internal Action? OnStall { get; set; }

    /// <summary>
    /// How long a pinned file reply may wait on a client that does not take its bytes: a send that waits this long
    /// for room copies every pinned reply still to go, and a reply pinned this long ago is copied at the next wait
    /// (a slow but steady client never waits long at once). A pin holds clusters and the image's request gate, so it
    /// must not wait on a client for long; short waits (a client briefly descheduled) are common and cheap to sit
    /// out, and copying at each of them cost a sequential reader a sixth of the server's CPU.
    /// </summary>
    internal static readonly TimeSpan PinGrace = TimeSpan.FromMilliseconds(50);

    /// <summary>True once a send failed; later replies are dropped (their requests end with the connection).</summary>
    public bool IsBroken
    {
        get { lock (_lock) return _broken; }
    }

    /// <summary>
    /// The reply to <paramref name="request"/>, which the reader handed on with <see cref="Started"/>: sent now, or
    /// after the replies ahead of it, or held for a moment while the connection's other requests finish
    /// (<see cref="ReplyHold"/>); never throws.
    /// </summary>
    public void Send(OutgoingReply reply, in NbdRequest request) => Send(reply with { Counted = ReplyHold.Counts(request) });

    /// <summary>The reader hands <paramref name="request"/> on to run (or to be refused); its reply comes through <see cref="Send(OutgoingReply, in NbdRequest)"/>.</summary>
    public void Started(in NbdRequest request) => _hold.Started(request);

    /// <summary>Sends <paramref name="reply"/> now, or after the replies ahead of it; never throws.</summary>
    public void Send(OutgoingReply reply)
    {
        if (reply.Body is { } body) body.PinnedAt = time.GetTimestamp();
        bool drain = false, dropped = false, copy = false, arm = false;
        lock (_lock)
        {
            if (reply.Counted) _hold.Ended();
            if (_broken) dropped = true;
            else if (_stalled && reply.Body is not null) copy = true;
            else Enqueue(reply, ref drain, ref arm);
        }
        if (copy)
        {
            // The sender is waiting for the client to take bytes: a pin must not wait with it (FileReplyBody). A copy
            // that fails ends the connection when the drainer reaches it, as a failed send would.
            reply.Body!.Copy();
            lock (_lock)
            {
                if (_broken) dropped = true;
                else Enqueue(reply, ref drain, ref arm);
            }
        }
        if (dropped) Finish(reply);
        else if (drain) _ = DrainAsync();
        else if (arm) ArmHold();
    }

    /// <summary>True when replies may carry data straight from a file (<see cref="FileReplyBody"/>): a plain socket on Linux.</summary>
    public bool SendsFiles => tls is null && SocketSendFile.IsSupported;

    private void Enqueue(OutgoingReply reply, ref bool drain, ref bool arm)
    {
        _queue.Add(reply);
        if (_sending || _corked) return;
        if (_hold.MayWait(reply, _queue.Count, CoalesceLimit))
        {
            // The first reply held starts the bound; the ones that join it share it.
            arm = _queue.Count == 1;
            return;
        }
        drain = _sending = true;
    }

    /// <summary>Sends the replies held for company (<see cref="ReplyHold"/>): the reader is about to wait for the client, or the bound ran out.</summary>
    public void SendHeld()
    {
        lock (_lock)
        {
            if (_sending || _corked || _queue.Count == 0) return;
            _sending = true;
        }
        _ = DrainAsync();
    }

    private void ArmHold()
    {
        lock (_copyLock)
        {
            if (_disposed) return;
            _holdTimer ??= time.CreateTimer(static state => ((ReplySender)state!).SendHeld(), this,
                Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            _holdTimer.Change(ReplyHold.Bound, Timeout.InfiniteTimeSpan);
        }
    }

    /// <summary>Holds replies back: the reader has more requests buffered and will uncork before it waits.</summary>
    public void Cork()
    {
        lock (_lock) _corked = true;
    }

    /// <summary>Lets held replies go, in one send.</summary>
    public void Uncork()
    {
        lock (_lock)
        {
            if (!_corked) return;
            _corked = false;
            if (_sending || _queue.Count == 0) return;
            _sending = true;
        }
        _ = DrainAsync();
    }

    /// <summary>Runs while this caller owns the sender; returns when the queue is empty, corked, or the socket failed.</summary>
    private async Task DrainAsync()
    {
        while (true)
        {
            List<OutgoingReply> batch;
            lock (_lock)
            {
                if (_queue.Count == 0 || _corked || _broken)
                {
                    _sending = false;
                    return;
                }
                batch = _queue;
                _queue = _spare;
            }
            try
            {
                await SendBatchAsync(batch);
            }
            catch (Exception)
            {
                // Socket errors, a disposed socket (hard abort), the abort token on TLS: the reply stream is out of step for good.
                Fail();
                return;
            }
            finally
            {
                foreach (var reply in batch) Finish(reply);
                batch.Clear();
                _spare = batch;
            }
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask SendBatchAsync(List<OutgoingReply> batch)
    {
        foreach (var reply in batch)
        {
            if (reply.Body is null) continue;
            await SendWithBodiesAsync(batch);
            return;
        }
        if (batch.Count == 1)
        {
            await SendAllAsync(batch[0].Buffer.AsMemory(0, batch[0].Length));
            return;
        }
        long total = 0;
        foreach (var reply in batch) total += reply.Length;
        if (total <= CoalesceLimit)
        {
            var joined = ArrayPool<byte>.Shared.Rent((int)total);
            try
            {
                int at = 0;
                foreach (var reply in batch)
                {
                    reply.Buffer.AsSpan(0, reply.Length).CopyTo(joined.AsSpan(at));
                    at += reply.Length;
                }
                await SendAllAsync(joined.AsMemory(0, at));
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(joined);
            }
            return;
        }
        if (tls is not null)
        {
            // A stream has no gather write: each reply goes in order (the TLS layer frames them into records anyway).
            foreach (var reply in batch) await SendAllAsync(reply.Buffer.AsMemory(0, reply.Length));
            return;
        }
        _segments.Clear();
        foreach (var reply in batch) _segments.Add(new ArraySegment<byte>(reply.Buffer, 0, reply.Length));
        await SendSegmentsAsync();
    }

    /// <summary>Sends <see cref="_segments"/> (one gather call, or a plain send for one) and clears them.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask SendSegmentsAsync()
    {
        if (_segments.Count == 1)
        {
            var only = _segments[0];
            _segments.Clear();
            await SendAllAsync(only.AsMemory());
            return;
        }
        long total = 0;
        foreach (var segment in _segments) total += segment.Count;
        var result = await Sent(_call!.SendAsync(socket, _segments));
        if (result.Error != SocketError.Success) throw result.Exception();
        long sent = result.Transferred;
        if (sent != total)
        {
            // A stream socket sends it all; should it ever stop short, send the rest in order.
            foreach (var segment in _segments.ToArray())
            {
                if (sent >= segment.Count) { sent -= segment.Count; continue; }
                await SendAllAsync(segment.AsMemory((int)sent));
                sent = 0;
            }
        }
        _segments.Clear();
    }

    /// <summary>
    /// A batch with file replies: the buffers up to each file reply's header in one gather send, then its data
    /// from the file; the buffers after the last one together.
    /// </summary>
    private async ValueTask SendWithBodiesAsync(List<OutgoingReply> batch)
    {
        _current = batch;
        try
        {
            _segments.Clear();
            for (int i = 0; i < batch.Count; i++)
            {
                var reply = batch[i];
                _segments.Add(new ArraySegment<byte>(reply.Buffer, 0, reply.Length));
                if (reply.Body is not { } body) continue;
                _unsentFrom = i;
                await SendSegmentsAsync();
                _unsentFrom = i + 1;
                await SendBodyAsync(body);
            }
            if (_segments.Count > 0) await SendSegmentsAsync();
        }
        finally
        {
            _current = null;
        }
    }

    /// <summary>
    /// A file reply's data: sendfile while the socket takes it. When it is full, one byte goes through the socket's own
    /// send, which waits for room without a thread; a wait longer than <see cref="PinGrace"/> copies the rest, which then
    /// goes the ordinary way.
    /// </summary>
    private async ValueTask SendBodyAsync(FileReplyBody body)
    {
        while (body.Sent < body.Length)
        {
            if (body.Pin is { } pin)
            {
                int n = SocketSendFile.Send(socket, pin.Handle, pin.FileOffset + body.Sent, body.Length - body.Sent);
                if (n > 0)
                {
                    body.Sent += n;
                    continue;
                }
                pin.CopyTo(_one, body.Sent);
                body.Sent++; // counted before the wait: a copy made meanwhile starts after it
                _waitingBody = body;
                try
                {
                    await SendAllAsync(_one);
                }
                finally
                {
                    _waitingBody = null;
                }
                continue;
            }
            await SendAllAsync(body.CopiedRest());
            body.Sent = body.Length;
        }
        body.Dispose(); // the pin goes as soon as its bytes are out, not with the batch
    }

    /// <summary>A plain send as it is when it completed at once; one that waits for room copies old pins and arms the grace timer first.</summary>
    private ValueTask<SocketCallArgs.Result> Sent(ValueTask<SocketCallArgs.Result> send) => send.IsCompleted ? send : StalledAsync(send);

    private async ValueTask<SocketCallArgs.Result> StalledAsync(ValueTask<SocketCallArgs.Result> send)
    {
        ITimer? timer = null;
        lock (_copyLock)
        {
            // Pins that have had their grace already go now, however short this wait turns out to be. Under the copy
            // lock, as the grace timer's copies are: a late callback of an earlier wait never copies beside this one.
            CopyPinned(time.GetTimestamp() - (long)(PinGrace.TotalSeconds * time.TimestampFrequency));
            if (!_disposed)
            {
                _waiting = true;
                timer = _graceTimer ??= time.CreateTimer(static state => ((ReplySender)state!).GraceOver(), this,
                    Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
                timer.Change(PinGrace, Timeout.InfiniteTimeSpan);
            }
        }
        OnStall?.Invoke();
        try
        {
            return await send;
        }
        finally
        {
            lock (_copyLock)
            {
                _waiting = false; // after a copy under way, if any
                if (!_disposed) timer?.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            }
            lock (_lock) _stalled = false;
        }
    }

    /// <summary>The client has not made room for <see cref="PinGrace"/>: copy every pinned reply waiting to go, and those still to come.</summary>
    private void GraceOver()
    {
        lock (_copyLock)
        {
            if (!_waiting || _disposed) return;
            lock (_lock) _stalled = true;
            CopyPinned(long.MaxValue);
        }
    }

    /// <summary>
    /// Copies the pinned replies still to go (queued, later in the drainer's batch, or the one whose send waits) that
    /// were pinned at or before <paramref name="pinnedBy"/>; only while the drainer is not sending any of them.
    /// </summary>
    private void CopyPinned(long pinnedBy)
    {
        List<FileReplyBody>? pinned = null;
        lock (_lock)
        {
            foreach (var reply in _queue)
                if (reply.Body is { Pin: not null } body && body.PinnedAt <= pinnedBy) (pinned ??= new()).Add(body);
        }
        if (_waitingBody is { Pin: not null } waiting && waiting.PinnedAt <= pinnedBy) (pinned ??= new()).Add(waiting);
        if (_current is { } batch)
            for (int i = _unsentFrom; i < batch.Count; i++)
                if (batch[i].Body is { Pin: not null } body && body.PinnedAt <= pinnedBy) (pinned ??= new()).Add(body);
        if (pinned is not null) foreach (var body in pinned) body.Copy();
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask SendAllAsync(ReadOnlyMemory<byte> memory)
    {
        if (tls is not null)
        {
            await tls.WriteAsync(memory, abort);
            return;
        }
        while (memory.Length > 0)
        {
            var result = await Sent(_call!.SendAsync(socket, memory));
            if (result.Error != SocketError.Success) throw result.Exception();
            memory = memory[result.Transferred..];
        }
    }

    /// <summary>Frees the send's event args; only once no send can start (the connection has ended).</summary>
    public void Dispose()
    {
        _call?.Dispose();
        lock (_copyLock)
        {
            // Under the lock: a copy the timer is making finishes first, and no timer is made or armed after this.
            _disposed = true;
            _graceTimer?.Dispose();
            _holdTimer?.Dispose();
        }
    }

    /// <summary>The connection cannot send any more: drop every queued reply and tell the connection.</summary>
    private void Fail()
    {
        List<OutgoingReply> queued;
        lock (_lock)
        {
            _broken = true;
            _sending = false;
            queued = _queue;
            _queue = new();
        }
        foreach (var reply in queued) Finish(reply);
        broken();
    }

    private void Finish(OutgoingReply reply)
    {
        RequestBuffers.Return(reply.Buffer);
        reply.Body?.Dispose();
        released(reply.Charge);
    }
}
