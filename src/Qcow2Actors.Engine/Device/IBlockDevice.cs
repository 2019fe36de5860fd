namespace Qcow2Actors.Engine.Device;

/// <summary>
/// A byte-addressed host file (or a stand-in for one in tests and chaos runs).
/// Everything the engine persists goes through this seam, so decorators can add
/// retries (reads and opens only) or inject crashes, torn writes and I/O errors.
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

    /// <summary>Asynchronous <see cref="Read"/>; same short-read rule.</summary>
    ValueTask<int> ReadAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken = default);

    /// <summary>Writes all of <paramref name="buffer"/> at <paramref name="offset"/>, extending the device if needed.</summary>
    void Write(ReadOnlySpan<byte> buffer, long offset);

    /// <summary>Asynchronous <see cref="Write"/>.</summary>
    ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken = default);

    /// <summary>
    /// Makes every completed write durable (fdatasync). A failure is final: callers must
    /// not retry, because the kernel may already have dropped the dirty pages.
    /// </summary>
    void Flush();

    /// <summary>Sets the device length (truncate or extend with zeros).</summary>
    void SetLength(long length);
}
