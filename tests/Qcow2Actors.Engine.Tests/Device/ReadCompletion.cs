using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Engine.Tests.Device;

/// <summary>Collects the end of one read started on the host file's asynchronous path, and counts how often it was told.</summary>
internal sealed class ReadCompletion : IHostReadCompletion
{
    private readonly TaskCompletionSource<(int Bytes, Exception? Error)> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _calls;

    public int Calls => Volatile.Read(ref _calls);

    public Task<(int Bytes, Exception? Error)> Task => _done.Task;

    public void OnHostReadCompleted(int bytesRead, Exception? error)
    {
        Interlocked.Increment(ref _calls);
        _done.TrySetResult((bytesRead, error));
    }
}
