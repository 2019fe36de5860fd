using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Engine.Check;

/// <summary>
/// A view of a device that notes whether anything was written through it (writes, length
/// changes, hole punches), so the repair can tell that the image is byte for byte what its first
/// check saw and skip checking it again. Disposing the view leaves the device open.
/// </summary>
internal sealed class WriteTrackingDevice(IBlockDevice inner) : IBlockDevice
{
    private int _changed;

    /// <summary>True once anything was written or resized through this view.</summary>
    public bool Changed => Volatile.Read(ref _changed) != 0;

    public long Length => inner.Length;

    public bool IsReadOnly => inner.IsReadOnly;

    public string Name => inner.Name;

    public int Read(Span<byte> buffer, long offset) => inner.Read(buffer, offset);

    public ValueTask<int> ReadAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken = default) =>
        inner.ReadAsync(buffer, offset, cancellationToken);

    public void Write(ReadOnlySpan<byte> buffer, long offset)
    {
        Volatile.Write(ref _changed, 1);
        inner.Write(buffer, offset);
    }

    public ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken = default)
    {
        Volatile.Write(ref _changed, 1);
        return inner.WriteAsync(buffer, offset, cancellationToken);
    }

    public void Flush() => inner.Flush();

    public ValueTask FlushAsync(CancellationToken cancellationToken = default) => inner.FlushAsync(cancellationToken);

    public void SetLength(long length)
    {
        Volatile.Write(ref _changed, 1);
        inner.SetLength(length);
    }

    public void PunchHole(long offset, long length)
    {
        Volatile.Write(ref _changed, 1);
        inner.PunchHole(offset, length);
    }

    public bool ReserveSpace(long offset, long length)
    {
        Volatile.Write(ref _changed, 1);
        return inner.ReserveSpace(offset, length);
    }

    public void Dispose()
    {
        // The repair borrows the device; its owner closes it.
    }
}
