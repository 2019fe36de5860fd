using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Engine.Tests.Device;

/// <summary>Stalls every flush (fdatasync) of the devices it wraps while it is closed; the test opens it.</summary>
internal sealed class FlushGate
{
    private readonly ManualResetEventSlim _open = new(true);
    private readonly TaskCompletionSource _entered = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completes when a flush first waits at the closed gate.</summary>
    public Task Entered => _entered.Task;

    public bool IsClosed => !_open.IsSet;

    public void Close() => _open.Reset();

    public void Open() => _open.Set();

    public void Pass()
    {
        if (_open.IsSet) return;
        _entered.TrySetResult();
        // Bounded only so that a broken engine cannot hang the test run; the test opens the gate.
        _open.Wait(TimeSpan.FromMinutes(1));
    }
}

/// <summary>A device whose flushes wait at <paramref name="gate"/> while it is closed, blocking the calling thread as a stalled fdatasync does.</summary>
internal sealed class StallingFlushDevice(IBlockDevice inner, FlushGate gate) : DelegatingDevice(inner)
{
    protected override ValueTask FlushCoreAsync(CancellationToken cancellationToken)
    {
        gate.Pass();
        return Inner.FlushAsync(cancellationToken);
    }
}
