using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Engine.Tests.Device;

/// <summary>
/// Once armed, holds the first device write (of any <see cref="HoldOneWrite"/> sharing it) until
/// released, telling the test when it arrived: a way to stop a request between its metadata and its data.
/// </summary>
internal sealed class WriteHold
{
    private int _held;
    public volatile bool Armed;
    public TaskCompletionSource Arrived { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    public bool TakeThisOne() => Armed && Interlocked.Exchange(ref _held, 1) == 0;
}

/// <summary>A device whose writes wait at <paramref name="hold"/> once it is armed (the first one only).</summary>
internal sealed class HoldOneWrite(IBlockDevice inner, WriteHold hold) : DelegatingDevice(inner)
{
    protected override async ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        if (hold.TakeThisOne())
        {
            hold.Arrived.TrySetResult();
            await hold.Release.Task;
        }
        await base.WriteCoreAsync(buffer, offset, cancellationToken);
    }
}
