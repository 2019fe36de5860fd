using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Engine.Read;

/// <summary>
/// One guest read started on the host file's asynchronous path (<see cref="Qcow2Image.TryStartRead"/>):
/// holds the image's request-gate admission until the host read ends, then zero-fills a tail the file
/// did not have (QEMU leaves the last cluster short), leaves the gate and tells the caller. Pooled, so a
/// started read allocates nothing.
/// </summary>
internal sealed class StartedGuestRead : IHostReadCompletion
{
    /// <summary>How many idle instances are kept; more are allocated and dropped.</summary>
    private const int PoolLimit = 256;

    private static readonly Lock PoolLock = new();
    private static readonly Stack<StartedGuestRead> Pool = new();

    private RequestGate? _gate;
    private byte[] _buffer = [];
    private int _index, _count;
    private IReadCompletion? _completion;

    /// <summary>A read that will leave <paramref name="gate"/> (if any) and tell <paramref name="completion"/>.</summary>
    public static StartedGuestRead Rent(RequestGate? gate, byte[] buffer, int index, int count, IReadCompletion completion)
    {
        StartedGuestRead? read;
        lock (PoolLock) Pool.TryPop(out read);
        read ??= new StartedGuestRead();
        read._gate = gate;
        read._buffer = buffer;
        read._index = index;
        read._count = count;
        read._completion = completion;
        return read;
    }

    /// <summary>The read was not started after all: leave the gate, tell nobody.</summary>
    public void Abandon()
    {
        var gate = _gate;
        Return();
        gate?.Exit();
    }

    /// <inheritdoc />
    public void OnHostReadCompleted(int bytesRead, Exception? error)
    {
        // A file may end inside its last cluster (QEMU does not write zero tails): those bytes are zeros.
        if (error is null && bytesRead < _count) _buffer.AsSpan(_index + bytesRead, _count - bytesRead).Clear();
        var (gate, completion) = (_gate, _completion!);
        Return();
        gate?.Exit();
        completion.OnReadCompleted(error);
    }

    private void Return()
    {
        _gate = null;
        _buffer = [];
        _completion = null;
        lock (PoolLock)
        {
            if (Pool.Count < PoolLimit) Pool.Push(this);
        }
    }
}
