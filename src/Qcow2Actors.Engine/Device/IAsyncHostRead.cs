namespace Qcow2Actors.Engine.Device;

/// <summary>
/// A device that can start a read and report its end later, with no thread waiting for the disk
/// meanwhile (<see cref="IoUringReadRing"/>). Lets a request path that missed the page cache go on
/// with other requests instead of parking a pool thread in pread.
/// </summary>
internal interface IAsyncHostRead
{
    /// <summary>
    /// Starts reading <paramref name="count"/> bytes at <paramref name="offset"/> into
    /// <paramref name="buffer"/> from <paramref name="index"/>, and returns true: <paramref name="completion"/>
    /// is then called exactly once, and the buffer must not be touched until it is. Returns false, having
    /// started nothing, when no asynchronous read is possible now (no ring, the ring is full or closing,
    /// the device is closed): the caller reads the ordinary way.
    /// </summary>
    bool TryStartRead(byte[] buffer, int index, int count, long offset, IHostReadCompletion completion);
}
