namespace Qcow2Actors.Engine.Device;

/// <summary>
/// Told when a read started with <see cref="IAsyncHostRead.TryStartRead"/> has ended. Called on the
/// ring's one thread, which also submits and completes every other read: an implementation must not
/// block or wait (frame a reply, hand work on), and must not throw.
/// </summary>
internal interface IHostReadCompletion
{
    /// <summary>
    /// <paramref name="bytesRead"/> bytes arrived (fewer than asked only where the file ends), or the read
    /// failed with <paramref name="error"/> (an <see cref="IOException"/> naming the file).
    /// </summary>
    void OnHostReadCompleted(int bytesRead, Exception? error);
}
