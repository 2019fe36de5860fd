namespace Qcow2Actors.Engine.Device;

/// <summary>
/// A byte-addressed host file (or a stand-in for one in tests and chaos runs).
/// Everything the engine persists goes through this seam, so decorators can add
/// retries (reads and opens only) or inject crashes, torn writes and I/O errors.
/// Implement it by deriving from <see cref="BlockDevice"/>, which turns one asynchronous
/// core per operation into every form listed here.
/// </summary>
public interface IBlockDevice : IDisposable
{
    /// <summary>Current length of the device in bytes.</summary>
    long Length { get; }

    /// <summary>True when the device was opened without write access.</summary>
    bool IsReadOnly { get; }

    /// <summary>A name for error messages (usually the file path).</summary>
    string Name { get; }

    /// <summary>
    /// Reads up to <c>buffer.Length</c> bytes at <paramref name="offset"/>. Returns the
    /// number of bytes read; it is short only when the read reaches the end of the device.
    /// </summary>
    int Read(Span<byte> buffer, long offset);

    /// <summary>Asynchronous <see cref="Read"/>; same short-read rule. Failures come back in the task, never thrown from the call.</summary>
    ValueTask<int> ReadAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken = default);

    /// <summary>Writes all of <paramref name="buffer"/> at <paramref name="offset"/>, extending the device if needed.</summary>
    void Write(ReadOnlySpan<byte> buffer, long offset);

    /// <summary>Asynchronous <see cref="Write"/>. Failures come back in the task, never thrown from the call.</summary>
    ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken = default);

    /// <summary>
    /// Makes every completed write durable (fdatasync). A failure is final: callers must
    /// not retry, because the kernel may already have dropped the dirty pages.
    /// </summary>
    void Flush();

    /// <summary>Asynchronous <see cref="Flush"/>; the same no-retry rule.</summary>
    ValueTask FlushAsync(CancellationToken cancellationToken = default);

    /// <summary>Sets the device length (truncate or extend with zeros).</summary>
    void SetLength(long length);

    /// <summary>
    /// Gives the storage behind [<paramref name="offset"/>, +<paramref name="length"/>) back to the
    /// host (fallocate PUNCH_HOLE|KEEP_SIZE): afterwards the range reads as zeros and
    /// <see cref="Length"/> is unchanged. Call it only for bytes nothing references any more and whose
    /// release is durable, since a crash cannot bring punched bytes back. A device that cannot free
    /// space writes zeros instead, so the read-back contract always holds.
    /// </summary>
    void PunchHole(long offset, long length);

    /// <summary>
    /// Allocates storage for [<paramref name="offset"/>, +<paramref name="length"/>) without changing
    /// <see cref="Length"/> or any content (fallocate KEEP_SIZE), so later writes there cannot fail
    /// for lack of space. Returns false when the device has no such notion (nothing is reserved,
    /// and writes may still meet a full disk).
    /// </summary>
    /// <exception cref="Qcow2NoSpaceException">The host filesystem has no room (ENOSPC, EDQUOT).</exception>
    bool ReserveSpace(long offset, long length);
}
