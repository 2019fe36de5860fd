using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Threading.Tasks.Sources;

namespace Qcow2Actors.Nbd.Protocol;

/// <summary>
/// One reusable receive or send on a plain socket whose failure is a <see cref="SocketError"/> value, not an
/// exception the runtime builds. One call at a time per instance.
/// </summary>
/// <remarks>
/// Why: <see cref="Socket"/>'s <c>ValueTask</c> calls report a failure (a client that resets its connection with a
/// reply still on its way, as fio's NBD engine does when a job ends) with an exception whose stack trace .NET builds
/// at once, with file and line numbers. That loads System.Diagnostics.StackTrace and System.Reflection.Metadata and
/// reads the program's PDB files: about 0.7 MiB of a server's memory for good, for an event that is routine for a
/// server. The event-args form of the same calls reports the error as a value. Completions run inline, where the
/// socket engine completes them, as the <c>ValueTask</c> calls' do under inline socket completions.
/// </remarks>
internal sealed class SocketCallArgs() : SocketAsyncEventArgs(unsafeSuppressExecutionContextFlow: true), IValueTaskSource<SocketCallArgs.Result>
{
    /// <summary>What a call did: bytes moved (a receive of 0: the peer closed), or the socket's error.</summary>
    public readonly record struct Result(int Transferred, SocketError Error)
    {
        /// <summary>The error as the exception a caller throws or completes with (thrown by nobody yet: no trace built).</summary>
        public SocketException Exception() => new((int)Error);
    }

    private ManualResetValueTaskSourceCore<Result> _source;

    /// <summary>Receives into <paramref name="buffer"/>.</summary>
    public ValueTask<Result> ReceiveAsync(Socket socket, Memory<byte> buffer)
    {
        Start(buffer);
        if (!socket.ReceiveAsync(this)) Finish();
        return new ValueTask<Result>(this, _source.Version);
    }

    /// <summary>Sends <paramref name="buffer"/> (all of it on a stream socket, unless the call fails).</summary>
    public ValueTask<Result> SendAsync(Socket socket, ReadOnlyMemory<byte> buffer)
    {
        Start(MemoryMarshal.AsMemory(buffer));
        if (!socket.SendAsync(this)) Finish();
        return new ValueTask<Result>(this, _source.Version);
    }

    /// <summary>Sends <paramref name="segments"/> in one gather call; the list must stay unchanged until it completes.</summary>
    public ValueTask<Result> SendAsync(Socket socket, IList<ArraySegment<byte>> segments)
    {
        _source.Reset();
        SetBuffer(null, 0, 0); // a buffer and a buffer list are exclusive
        BufferList = segments;
        if (!socket.SendAsync(this)) Finish();
        return new ValueTask<Result>(this, _source.Version);
    }

    private void Start(Memory<byte> buffer)
    {
        _source.Reset();
        if (BufferList is not null) BufferList = null;
        SetBuffer(buffer);
    }

    protected override void OnCompleted(SocketAsyncEventArgs e) => Finish();

    private void Finish() => _source.SetResult(new Result(BytesTransferred, SocketError));

    Result IValueTaskSource<Result>.GetResult(short token) => _source.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource<Result>.GetStatus(short token) => _source.GetStatus(token);

    void IValueTaskSource<Result>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _source.OnCompleted(continuation, state, token, flags);
}
