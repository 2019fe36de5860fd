namespace Qcow2Actors.Engine.Device;

/// <summary>
/// The base of every <see cref="IBlockDevice"/>: a device implements one asynchronous core per
/// operation (<see cref="ReadCoreAsync"/>, <see cref="WriteCoreAsync"/>, <see cref="FlushCoreAsync"/>)
/// and this class provides the synchronous and asynchronous forms callers use, so a decorator
/// (retries, fault injection) intercepts each operation in exactly one place.
/// </summary>
/// <remarks>
/// A core may complete synchronously (the file devices do: the pread runs on the caller's thread,
/// which saves two thread switches per I/O) and may throw instead of returning a faulted task: the
/// asynchronous forms turn such a throw into a faulted task, and the synchronous forms wait for the
/// core's result on the calling thread (free when the core completed synchronously, as it does for
/// every device here except a retry backing off). While a core runs on the caller's thread the engine counts that
/// thread as held by a device call, so the thread pool's minimum grows ahead of calls hung on a disk
/// (<c>ThreadPoolFloor</c>).
/// </remarks>
public abstract class BlockDevice : IBlockDevice
{
    /// <inheritdoc />
    public abstract long Length { get; }

    /// <inheritdoc />
    public abstract bool IsReadOnly { get; }

    /// <inheritdoc />
    public abstract string Name { get; }

    /// <summary>
    /// Reads up to <c>buffer.Length</c> bytes at <paramref name="offset"/>, returning how many were read
    /// (short only at the end of the device). The one read path of the device.
    /// </summary>
    protected abstract ValueTask<int> ReadCoreAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken);

    /// <summary>Writes all of <paramref name="buffer"/> at <paramref name="offset"/>. The one write path of the device.</summary>
    protected abstract ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken);

    /// <summary>Makes every completed write durable. The one flush path of the device; a failure must not be retried.</summary>
    protected abstract ValueTask FlushCoreAsync(CancellationToken cancellationToken);

    /// <inheritdoc />
    public ValueTask<int> ReadAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken = default)
    {
        if (cancellationToken.IsCancellationRequested) return ValueTask.FromCanceled<int>(cancellationToken);
        using var held = ThreadPoolFloor.Hold();
        try
        {
            return ReadCoreAsync(buffer, offset, cancellationToken);
        }
        catch (Exception ex)
        {
            return ValueTask.FromException<int>(ex);
        }
    }

    /// <inheritdoc />
    public ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken = default)
    {
        if (cancellationToken.IsCancellationRequested) return ValueTask.FromCanceled(cancellationToken);
        using var held = ThreadPoolFloor.Hold();
        try
        {
            return WriteCoreAsync(buffer, offset, cancellationToken);
        }
        catch (Exception ex)
        {
            return ValueTask.FromException(ex);
        }
    }

    /// <inheritdoc />
    public ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        if (cancellationToken.IsCancellationRequested) return ValueTask.FromCanceled(cancellationToken);
        try
        {
            return FlushCoreAsync(cancellationToken);
        }
        catch (Exception ex)
        {
            return ValueTask.FromException(ex);
        }
    }

    /// <inheritdoc />
    public unsafe int Read(Span<byte> buffer, long offset)
    {
        // The span is pinned for the whole call and lent to the core as Memory; the core finishes
        // before the pin ends, so the memory cannot outlive the caller's buffer.
        fixed (byte* p = buffer)
        {
            using var memory = new PointerMemory(p, buffer.Length);
            using var held = ThreadPoolFloor.Hold();
            return SyncCompletion.Wait(ReadCoreAsync(memory.Memory, offset, CancellationToken.None));
        }
    }

    /// <inheritdoc />
    public unsafe void Write(ReadOnlySpan<byte> buffer, long offset)
    {
        fixed (byte* p = buffer)
        {
            using var memory = new PointerMemory(p, buffer.Length);
            using var held = ThreadPoolFloor.Hold();
            SyncCompletion.Wait(WriteCoreAsync(memory.Memory, offset, CancellationToken.None));
        }
    }

    /// <inheritdoc />
    public void Flush() => SyncCompletion.Wait(FlushCoreAsync(CancellationToken.None));

    /// <inheritdoc />
    public abstract void SetLength(long length);

    /// <inheritdoc />
    /// <remarks>This default writes zeros over the range, for devices that cannot give space back.</remarks>
    public virtual void PunchHole(long offset, long length) => ZeroFill.Write(this, offset, length);

    /// <inheritdoc />
    /// <remarks>This default reserves nothing and returns false.</remarks>
    public virtual bool ReserveSpace(long offset, long length) => false;

    /// <inheritdoc />
    public void Dispose()
    {
        Dispose(disposing: true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases what the device holds (handles, the device it decorates).</summary>
    protected virtual void Dispose(bool disposing)
    {
    }
}

/// <summary>Writes zeros over a range in bounded chunks: the stand-in for a hole where none can be punched.</summary>
internal static class ZeroFill
{
    public static void Write(IBlockDevice device, long offset, long length)
    {
        if (length <= 0) return;
        var zeros = new byte[(int)Math.Min(length, 1 << 20)];
        for (long done = 0; done < length; done += zeros.Length)
            device.Write(zeros.AsSpan(0, (int)Math.Min(zeros.Length, length - done)), offset + done);
    }
}
