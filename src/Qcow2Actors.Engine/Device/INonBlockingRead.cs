namespace Qcow2Actors.Engine.Device;

/// <summary>
/// A device that can answer a read at once when it would not wait for the disk (the bytes are in the
/// host's page cache), and otherwise says no without waiting. Lets a request path serve cached reads on
/// the thread that received them and hand only real disk reads to a thread that may block.
/// </summary>
internal interface INonBlockingRead
{
    /// <summary>
    /// Fills all of <paramref name="buffer"/> from <paramref name="offset"/> and returns true, or returns false
    /// (having waited for nothing) when that would need the disk, the file ends inside the range, the system
    /// has no such read, or it failed: the caller then reads the ordinary way, which reports any error.
    /// </summary>
    bool TryReadNow(Span<byte> buffer, long offset);
}
