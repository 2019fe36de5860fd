namespace Qcow2Actors.Nbd.Protocol;

/// <summary>
/// A first-come-first-served budget of bytes, so one connection's pipelined 32 MiB reads
/// and writes cannot pin unbounded memory. A request larger than the whole budget is
/// clamped by the caller, so it waits for an idle gate rather than forever.
/// </summary>
internal sealed class AsyncByteGate(long capacity)
{
    private readonly Lock _lock = new();
    private readonly Queue<(long Bytes, TaskCompletionSource Tcs)> _waiters = new();
    private long _available = capacity;

    public ValueTask WaitAsync(long bytes, CancellationToken cancellationToken)
    {
        TaskCompletionSource tcs;
        lock (_lock)
        {
            // Queue behind earlier waiters even if this one would fit, so big requests are not starved.
            if (_waiters.Count == 0 && _available >= bytes)
            {
                _available -= bytes;
                return ValueTask.CompletedTask;
            }
            tcs = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Enqueue((bytes, tcs));
        }
        return new ValueTask(WaitSlowAsync(tcs, cancellationToken));
    }

    private async Task WaitSlowAsync(TaskCompletionSource tcs, CancellationToken cancellationToken)
    {
        await using var registration = cancellationToken.Register(() =>
        {
            if (tcs.TrySetCanceled(cancellationToken)) Release(0); // let the next waiter past the cancelled one
        });
        await tcs.Task;
    }

    public void Release(long bytes)
    {
        lock (_lock)
        {
            _available += bytes;
            while (_waiters.Count > 0)
            {
                var (need, tcs) = _waiters.Peek();
                if (tcs.Task.IsCompleted) { _waiters.Dequeue(); continue; }
                if (_available < need) break;
                _waiters.Dequeue();
                _available -= need;
                if (!tcs.TrySetResult()) _available += need; // cancelled in the meantime
            }
        }
    }
}
