using System.IO.Pipelines;
using System.Net.Sockets;

namespace Qcow2Actors.Nbd.Protocol;

/// <summary>
/// Moves a connection's incoming bytes from the socket into a pipe that the handshake and the
/// request reader consume. One long-lived receive loop: no allocation per receive, and the reader's
/// continuation runs inline when bytes arrive (no thread hop between the socket and the parser).
/// The pipe pauses the loop when the reader falls behind (its request slots are full), so a client
/// that floods the connection is held back by TCP rather than buffered.
/// </summary>
internal sealed class SocketReceiver
{
    /// <summary>Smallest buffer handed to a receive (as the stream reader before it): a pipelined batch of small requests in one call.</summary>
    private const int MinimumReceiveSize = 64 * 1024;

    private readonly Socket _socket;
    private readonly Pipe _pipe = new(new PipeOptions(
        pauseWriterThreshold: 512 * 1024,
        resumeWriterThreshold: 256 * 1024,
        minimumSegmentSize: MinimumReceiveSize,
        readerScheduler: PipeScheduler.Inline,
        writerScheduler: PipeScheduler.Inline,
        useSynchronizationContext: false));
    private Task _loop = Task.CompletedTask;

    public SocketReceiver(Socket socket) => _socket = socket;

    /// <summary>What the peer sent; completes when it closes (with the error when the socket failed).</summary>
    public PipeReader Reader => _pipe.Reader;

    /// <summary>Starts receiving.</summary>
    public void Start() => _loop = ReceiveAsync();

    /// <summary>Ends when the peer closed, the socket failed, or the reader completed.</summary>
    public Task Completion => _loop;

    private async Task ReceiveAsync()
    {
        var writer = _pipe.Writer;
        Exception? error = null;
        try
        {
            while (true)
            {
                var memory = writer.GetMemory(MinimumReceiveSize);
                int received = await _socket.ReceiveAsync(memory, SocketFlags.None);
                if (received == 0) break;
                writer.Advance(received);
                var flushed = await writer.FlushAsync();
                if (flushed.IsCompleted || flushed.IsCanceled) break;
            }
        }
        catch (Exception ex)
        {
            // The reader sees it on its next read: a reset or a disposed socket ends the connection there.
            error = ex;
        }
        await writer.CompleteAsync(error);
    }
}
