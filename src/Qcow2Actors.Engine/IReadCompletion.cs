namespace Qcow2Actors.Engine;

/// <summary>
/// Told when a read started with <see cref="Qcow2Image.TryStartRead"/> has ended. It is called on the
/// engine's one I/O completion thread, which also serves every other started read: it must not block or
/// wait (framing and sending a reply is fine; anything slower belongs on another thread) and must not throw.
/// </summary>
public interface IReadCompletion
{
    /// <summary>
    /// The buffer now holds the guest bytes (<paramref name="error"/> null), or the read failed; a failure
    /// is only the fast path's: read again the ordinary way (<see cref="Qcow2Image.ReadAsync"/>), which
    /// retries transient errors and reports the rest.
    /// </summary>
    void OnReadCompleted(Exception? error);
}
