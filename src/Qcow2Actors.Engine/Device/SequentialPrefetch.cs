namespace Qcow2Actors.Engine.Device;

/// <summary>
/// Spots a stream of large reads moving forward through a host file and asks the kernel to read ahead of it
/// (<c>POSIX_FADV_WILLNEED</c>), so the disk works on the next requests while the current ones travel to the
/// client. Why: the device's handle has readahead off (see <see cref="FileBlockDevice"/>), and without it a
/// sequential NBD reader with eight 1 MiB requests in flight kept the disk idle between requests: 1.3 GB/s from a
/// cold cache where the same reads from memory ran at 2.8 GB/s and the disk alone gives ~1.9
/// (bench/results/readahead-2026-12-02.md).
/// </summary>
/// <remarks>
/// A read belongs to the stream when it starts within <see cref="Window"/> of the furthest end seen, behind or
/// ahead of it: the server runs several requests at once, so they reach the device a little out of order.
/// Anything else starts a new stream, with no prefetch until its second read. The hint only warms the page cache: it changes
/// no bytes and costs nothing when the pages are cached already. Thread-safe; the system call runs outside the lock.
/// </remarks>
internal sealed class SequentialPrefetch
{
    /// <summary>Smallest read that counts toward a stream; smaller ones are left to the kernel.</summary>
    public const int MinRead = 256 * 1024;

    /// <summary>How far ahead of the stream's furthest read the kernel is asked to read.</summary>
    public const long Window = 8L * 1024 * 1024;

    /// <summary>Least new range worth a hint: one hint per couple of requests, not one per request.</summary>
    public const long Step = 2L * 1024 * 1024;

    private readonly Lock _lock = new();
    private long _streamEnd = -1; // furthest end of a read in the current stream; -1: none yet
    private long _ahead;          // end of the range already hinted
    private long _hintedFrom = -1; // where the stream's first hint started; -1: no hint yet in this stream

    /// <summary>
    /// True when a readahead was asked for the byte before <paramref name="end"/> in the current stream: a wait for
    /// that page then waits for bytes already on their way, not for a read of its own.
    /// </summary>
    public bool Hinted(long end)
    {
        lock (_lock) return _hintedFrom >= 0 && end > _hintedFrom && end <= _ahead;
    }

    /// <summary>
    /// Notes a read of <paramref name="length"/> bytes at <paramref name="offset"/> and returns the range to read
    /// ahead, if any (<paramref name="length"/> 0: none).
    /// </summary>
    public (long Offset, long Length) OnRead(long offset, int length)
    {
        if (length < MinRead) return (0, 0);
        long end = offset + length;
        lock (_lock)
        {
            if (_streamEnd < 0 || offset > _streamEnd + Window || offset < _streamEnd - Window)
            {
                _streamEnd = end;
                _ahead = end;
                _hintedFrom = -1;
                return (0, 0);
            }
            _streamEnd = Math.Max(_streamEnd, end);
            long from = Math.Max(_ahead, _streamEnd);
            long to = _streamEnd + Window;
            if (to - from < Step) return (0, 0);
            _ahead = to;
            if (_hintedFrom < 0) _hintedFrom = from;
            return (from, to - from);
        }
    }
}
