namespace Qcow2Actors.Engine;

/// <summary>
/// The door every request of a writable image passes (reads, writes, flushes, resize). Normally
/// open: passing costs one interlocked increment and decrement. An online edit (snapshot create,
/// apply, delete; check) closes it: requests that arrive meanwhile wait at the door (they neither
/// fail nor reach the engine), the closer waits until the requests already inside have finished,
/// edits the image alone, and opens the door again. Closers take turns.
/// </summary>
/// <remarks>
/// A request holding an admission must never ask for a second one (it could wait on a closed door
/// while the closer waits for it): the image's own calls between its public methods go around it.
/// </remarks>
internal sealed class RequestGate
{
    private readonly object _turns = new();
    private Task _lastTurn = Task.CompletedTask;
    private int _inside;
    // Non-null while closed; completes when the door opens again.
    private TaskCompletionSource? _closed;
    private TaskCompletionSource? _drained;
    // Completed when the door closes, replaced when it opens again: an observer waits for an edit to begin without polling.
    private TaskCompletionSource _nextClose = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Requests inside now (for tests).</summary>
    public int Inside => Volatile.Read(ref _inside);

    /// <summary>True while an edit holds the door closed.</summary>
    public bool IsClosed => Volatile.Read(ref _closed) is not null;

    /// <summary>Completes once the door is closed: at once while it is, else when the next closer closes it.</summary>
    public Task Closed => Volatile.Read(ref _nextClose).Task;

    /// <summary>Passes the door if it is open; false (and nothing held) when it is closed.</summary>
    public bool TryEnter()
    {
        // Increment first, then look: a closer that set _closed before our increment either sees us
        // inside (and waits for our Exit) or we see it closed (and step back out).
        Interlocked.Increment(ref _inside);
        if (Volatile.Read(ref _closed) is null) return true;
        Exit();
        return false;
    }

    /// <summary>Leaves after <see cref="TryEnter"/> or <see cref="EnterAsync"/>.</summary>
    public void Exit()
    {
        if (Interlocked.Decrement(ref _inside) == 0 && Volatile.Read(ref _closed) is not null)
            Volatile.Read(ref _drained)?.TrySetResult();
    }

    /// <summary>Passes the door, waiting while it is closed; dispose the admission to leave.</summary>
    public ValueTask<Admission> EnterAsync(CancellationToken cancellationToken)
    {
        if (TryEnter()) return new ValueTask<Admission>(new Admission(this));
        return WaitAsync(cancellationToken);
    }

    private async ValueTask<Admission> WaitAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            if (Volatile.Read(ref _closed) is { } closed) await closed.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
            if (TryEnter()) return new Admission(this);
        }
    }

    /// <summary>
    /// Closes the door (after any earlier closer has opened it again) and returns once every request
    /// inside has left. The returned handle opens it again when disposed.
    /// </summary>
    public async Task<Closure> CloseAsync(CancellationToken cancellationToken)
    {
        var mine = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task previous;
        lock (_turns)
        {
            previous = _lastTurn;
            _lastTurn = mine.Task;
        }
        try
        {
            // The turn is ours even if we stop waiting: the next closer waits for ours to end.
            await previous.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            _ = previous.ContinueWith(_ => mine.TrySetResult(), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            throw;
        }
        var drained = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Volatile.Write(ref _drained, drained);
        // A full fence (Interlocked) between publishing "closed" and reading the count.
        Interlocked.Exchange(ref _closed, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        Volatile.Read(ref _nextClose).TrySetResult();
        var closure = new Closure(this, mine);
        if (Volatile.Read(ref _inside) == 0) return closure;
        try
        {
            await drained.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            closure.Dispose();
            throw;
        }
        return closure;
    }

    private void Open(TaskCompletionSource turn)
    {
        Volatile.Write(ref _nextClose, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        var closed = Interlocked.Exchange(ref _closed, null);
        Volatile.Write(ref _drained, null);
        closed?.TrySetResult();
        turn.TrySetResult();
    }

    /// <summary>One request inside the door; disposing it leaves.</summary>
    internal readonly struct Admission(RequestGate? gate) : IDisposable
    {
        public void Dispose() => gate?.Exit();
    }

    /// <summary>The door held closed by one edit; disposing it opens the door.</summary>
    internal sealed class Closure(RequestGate gate, TaskCompletionSource turn) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0) gate.Open(turn);
        }
    }
}
