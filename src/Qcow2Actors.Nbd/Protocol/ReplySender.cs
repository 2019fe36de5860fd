using System.Buffers;
using System.Net.Sockets;
using System.Runtime.CompilerServices;

namespace Qcow2Actors.Nbd.Protocol;

/// <summary>
/// Puts whole replies on the socket, one sender at a time, in the order they were handed over.
/// Replies made while a send is under way, or while the reader holds the cork (it has more whole
/// requests buffered), queue up and leave together: small ones copied into one buffer, large ones
/// in one gather send, so a pipelined batch costs one system call rather than one per reply.
/// After each send the reply's buffer goes back to the pool and its request's budget is released.
/// On a TLS connection (<paramref name="tls"/> set) the same batches go through the TLS stream instead
/// of the socket; a plain connection writes to the socket directly, with no stream in between (and a failed send
/// is a value, <see cref="SocketCallArgs"/>: a client that resets the connection costs no stack trace).
/// </summary>
internal sealed class ReplySender(Socket socket, Stream? tls, Action<long> released, Action broken, CancellationToken abort) : IDisposable
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

    /// <summary>True once a send failed; later replies are dropped (their requests end with the connection).</summary>
    public bool IsBroken
    {
        get { lock (_lock) return _broken; }
    }

    /// <summary>Sends <paramref name="reply"/> now, or after the replies ahead of it; never throws.</summary>
    public void Send(OutgoingReply reply)
    {
        bool drain = false, dropped = false;
        lock (_lock)
        {
            if (_broken) dropped = true;
            else
            {
                _queue.Add(reply);
                if (!_sending && !_corked) drain = _sending = true;
            }
        }
        if (dropped) Finish(reply);
        else if (drain) _ = DrainAsync();
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
        var result = await _call!.SendAsync(socket, _segments);
        if (result.Error != SocketError.Success) throw result.Exception();
        long sent = result.Transferred;
        if (sent == total) return;
        // A stream socket sends it all; should it ever stop short, send the rest in order.
        foreach (var reply in batch)
        {
            if (sent >= reply.Length) { sent -= reply.Length; continue; }
            await SendAllAsync(reply.Buffer.AsMemory((int)sent, reply.Length - (int)sent));
            sent = 0;
        }
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
            var result = await _call!.SendAsync(socket, memory);
            if (result.Error != SocketError.Success) throw result.Exception();
            memory = memory[result.Transferred..];
        }
    }

    /// <summary>Frees the send's event args; only once no send can start (the connection has ended).</summary>
    public void Dispose() => _call?.Dispose();

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
        released(reply.Charge);
    }
}
