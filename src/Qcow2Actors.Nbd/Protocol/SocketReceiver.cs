using System.IO.Pipelines;
using System.Net.Sockets;

namespace Qcow2Actors.Nbd.Protocol;

/// <summary>
/// Moves a connection's incoming bytes from the socket into a pipe that the handshake and the
/// request reader consume. One long-lived receive loop: no allocation per receive, and the reader's
/// continuation runs inline when bytes arrive (no thread hop between the socket and the parser).
/// The pipe pauses the loop when the reader falls behind (its request slots are full), so a client
/// that floods the connection is held back by TCP rather than buffered.
/// After NBD_OPT_STARTTLS the loop is paused (<see cref="PauseAsync"/>) and restarted on the TLS
/// stream (<see cref="Start(Stream)"/>): the same pipe then carries the decrypted bytes, so the
/// readers never notice, and a plain connection keeps receiving straight from the socket.
/// A connection that can never turn to TLS may instead receive on a thread of its own (<c>receiveThread</c>): the
/// thread waits in poll() for its socket alone, and the reader, running inline on it, may then wait on the disk,
/// holding up no other connection (<see cref="OnReceiveThread"/>).
/// </summary>
internal sealed class SocketReceiver(Socket socket, bool receiveThread = false)
{
    /// <summary>
    /// Longest a receive thread waits in poll() before it looks at its socket again. Closing the socket wakes a poll
    /// under way (an idle connection's thread ends within milliseconds of a stop, ReceiveThreadTests); this only bounds
    /// how long the thread could outlive its connection if a close ever did not.
    /// </summary>
    private const int PollMicroseconds = 5_000_000;

    [ThreadStatic]
    private static bool t_onReceiveThread;

    /// <summary>True on a connection's own receive thread, where the reader may wait on the disk.</summary>
    public static bool OnReceiveThread => t_onReceiveThread;

    /// <summary>Smallest buffer handed to a receive (as the stream reader before it): a pipelined batch of small requests in one call.</summary>
    private const int MinimumReceiveSize = 64 * 1024;

    /// <summary>Buffer asked of the pipe per TLS read: a TLS record's plaintext is at most 16 KiB, so a read never fills more.</summary>
    private const int TlsRecordSize = 16 * 1024;

    private readonly Socket _socket = socket;
    private readonly Pipe _pipe = new(new PipeOptions(
        pauseWriterThreshold: 512 * 1024,
        resumeWriterThreshold: 256 * 1024,
        minimumSegmentSize: MinimumReceiveSize,
        readerScheduler: PipeScheduler.Inline,
        writerScheduler: PipeScheduler.Inline,
        useSynchronizationContext: false));
    private Task _loop = Task.CompletedTask;
    private CancellationTokenSource? _pause;
    private volatile bool _pausable;

    /// <summary>What the peer sent; completes when it closes (with the error when the socket failed).</summary>
    public PipeReader Reader => _pipe.Reader;

    /// <summary>
    /// Starts the asynchronous receive loop (never a receive thread: <see cref="Run"/> picks that); <paramref name="pausable"/>
    /// when STARTTLS may come (each receive then carries the pause token until <see cref="EndPausable"/>, a registration
    /// a plain listener never pays for).
    /// </summary>
    public void Start(bool pausable)
    {
        _pausable = pausable;
        _pause = pausable ? new CancellationTokenSource() : null;
        _loop = ReceiveAsync(null, _pause?.Token ?? CancellationToken.None);
    }

    /// <summary>
    /// Starts receiving and the connection's <paramref name="reader"/>; the task is the reader's. With a receive thread
    /// (a connection that can never turn to TLS) the reader starts on that thread, before its first receive: every
    /// later wait of the reader on the pipe then resumes there (the thread is the pipe's only writer, so the reader
    /// never finds bytes it did not wait for while on another thread), and the connection's writes run on it from the
    /// first request on.
    /// Started elsewhere, the reader could stay on a pool thread for as long as each reply raced the next request in.
    /// </summary>
    public Task Run(bool pausable, Func<Task> reader)
    {
        if (receiveThread && !pausable) return StartThread(reader);
        Start(pausable);
        return reader();
    }

    private Task StartThread(Func<Task> reader)
    {
        var ended = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new TaskCompletionSource<Task>(TaskCreationOptions.RunContinuationsAsynchronously);
        _loop = ended.Task;
        var thread = new Thread(() =>
        {
            t_onReceiveThread = true;
            try
            {
                started.SetResult(reader());
            }
            catch (Exception ex)
            {
                started.SetException(ex); // the reader's caller sees it, as if the reader had thrown from its task
            }
            ReceiveOnThread();
            ended.SetResult();
        }) { IsBackground = true, Name = "q2a-nbd-recv" };
        thread.UnsafeStart();
        return started.Task.Unwrap();
    }

    /// <summary>Negotiation is over: later receives go without the pause token.</summary>
    public void EndPausable() => _pausable = false;

    /// <summary>Resumes receiving, now from <paramref name="source"/> (the TLS stream over the socket), into the same pipe.</summary>
    public void Start(Stream source)
    {
        _pause = null; // a TLS connection is never paused again
        _loop = ReceiveAsync(source, CancellationToken.None);
    }

    /// <summary>
    /// Stops the socket loop without completing the pipe and without losing a byte: a receive cancelled
    /// while waiting has taken nothing from the kernel, and one that completed has put its bytes in the pipe.
    /// A flush held by a full pipe is released too (its bytes are already the reader's): otherwise a client
    /// that sent more than the pipe holds behind STARTTLS would wedge the pause, the reader being the pauser.
    /// </summary>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired first (the loop is then left to the close).</exception>
    public async Task PauseAsync(CancellationToken cancellationToken)
    {
        if (_pause is not { } pause) throw new InvalidOperationException("the receive loop cannot pause");
        await pause.CancelAsync();
        _pipe.Writer.CancelPendingFlush();
        await _loop.WaitAsync(cancellationToken);
        pause.Dispose();
        _pause = null;
    }

    /// <summary>
    /// Releases a flush waiting on a reader that will never read again (the connection is being cut off): the
    /// loop then meets the closed socket and ends, so the close never waits on it.
    /// </summary>
    public void Abort() => _pipe.Writer.CancelPendingFlush();

    /// <summary>Ends when the peer closed, the socket failed, or the reader completed.</summary>
    public Task Completion => _loop;

    /// <summary>
    /// The receive loop of a connection's own thread: non-blocking receives, poll() between them. The socket is made
    /// non-blocking for .NET too, so a receive with nothing to read answers WouldBlock at once rather than waiting
    /// through the socket engine (whose thread would then be woken for this socket's every packet).
    /// </summary>
    private void ReceiveOnThread()
    {
        var writer = _pipe.Writer;
        Exception? error = null;
        try
        {
            _socket.Blocking = false;
            while (true)
            {
                var memory = writer.GetMemory(MinimumReceiveSize);
                int received = _socket.Receive(memory.Span, SocketFlags.None, out var status);
                if (status == SocketError.WouldBlock)
                {
                    _socket.Poll(PollMicroseconds, SelectMode.SelectRead);
                    continue;
                }
                if (status != SocketError.Success)
                {
                    error = new SocketException((int)status);
                    break;
                }
                if (received == 0) break;
                writer.Advance(received);
                // The reader runs inline in the flush; a full pipe (the reader's slots are taken) holds this thread,
                // and with it the socket, until the reader takes bytes again. A cancelled flush (an abort) has
                // committed the bytes: the next receive meets the closed socket.
                var flush = writer.FlushAsync(CancellationToken.None);
                var flushed = flush.IsCompleted ? flush.Result : flush.AsTask().GetAwaiter().GetResult();
                if (flushed.IsCompleted) break;
            }
        }
        catch (Exception ex)
        {
            error = ex; // the reader sees it on its next read, as from the asynchronous loop
        }
        try
        {
            writer.Complete(error);
        }
        catch (Exception ex) when (ex is InvalidOperationException or ObjectDisposedException)
        {
            // Completed already: nothing is left to tell the reader, and a throw here would end the process.
        }
    }

    private async Task ReceiveAsync(Stream? source, CancellationToken pause)
    {
        var writer = _pipe.Writer;
        Exception? error = null;
        // Once no pause can come, a plain socket's receives report a reset as a value (SocketCallArgs says why).
        using var plain = source is null ? new SocketCallArgs() : null;
        try
        {
            while (true)
            {
                int received;
                if (plain is not null && !_pausable)
                {
                    var result = await plain.ReceiveAsync(_socket, writer.GetMemory(MinimumReceiveSize));
                    if (result.Error != SocketError.Success)
                    {
                        error = result.Exception();
                        break;
                    }
                    received = result.Transferred;
                }
                else if (source is null)
                {
                    var memory = writer.GetMemory(MinimumReceiveSize);
                    received = await _socket.ReceiveAsync(memory, SocketFlags.None, pause);
                }
                else
                {
                    var memory = writer.GetMemory(TlsRecordSize);
                    received = await source.ReadAsync(memory, CancellationToken.None); // a TLS loop ends with the socket, never paused
                }
                if (received == 0) break;
                writer.Advance(received);
                // Not cancelled by token: a token cancelled before the call would skip committing the bytes. A cancelled
                // flush (CancelPendingFlush, from a pause or an abort) has committed them: they are the reader's.
                var flushed = await writer.FlushAsync(CancellationToken.None);
                if (flushed.IsCompleted) break;
                if (pause.IsCancellationRequested) return;
                // Otherwise a cancel left over from a pause that found the loop receiving, or an abort: the socket says which.
            }
        }
        catch (OperationCanceledException) when (pause.IsCancellationRequested)
        {
            return; // paused for STARTTLS: the pipe stays open for the TLS loop
        }
        catch (Exception ex)
        {
            // The reader sees it on its next read: a reset or a disposed socket ends the connection there.
            error = ex;
        }
        await writer.CompleteAsync(error);
    }
}
