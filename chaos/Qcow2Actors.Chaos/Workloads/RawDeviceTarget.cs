using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Chaos.Workloads;

/// <summary>
/// A raw disk on an <see cref="IBlockDevice"/>: guest offset = device offset, flush = fdatasync.
/// It keeps the crash contract trivially, which makes it the control case for the harness
/// (a verifier that flags it is wrong) and a baseline for the qcow2 engine.
/// </summary>
public sealed class RawDeviceTarget : IChaosTarget
{
    private static readonly byte[] Zeros = new byte[64 * 1024];
    private readonly IBlockDevice _device;
    private readonly bool _ownsDevice;

    /// <summary>Serves <paramref name="virtualSize"/> bytes of <paramref name="device"/>; disposes it on dispose when <paramref name="ownsDevice"/>.</summary>
    public RawDeviceTarget(IBlockDevice device, long virtualSize, bool ownsDevice = false)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentOutOfRangeException.ThrowIfNegative(virtualSize);
        _device = device;
        VirtualSize = virtualSize;
        _ownsDevice = ownsDevice;
    }

    /// <inheritdoc />
    public long VirtualSize { get; }

    /// <inheritdoc />
    public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua = false, CancellationToken cancellationToken = default)
    {
        CheckRange(offset, data.Length);
        await _device.WriteAsync(data, offset, cancellationToken);
        // A raw file has no per-write FUA; fdatasync of the whole file is the (stronger) substitute.
        if (fua) _device.Flush();
    }

    /// <inheritdoc />
    public async ValueTask WriteZeroesAsync(long offset, long length, bool unmap = false, bool fua = false, CancellationToken cancellationToken = default)
    {
        CheckRange(offset, length);
        for (var done = 0L; done < length;)
        {
            var n = (int)Math.Min(Zeros.Length, length - done);
            await _device.WriteAsync(Zeros.AsMemory(0, n), offset + done, cancellationToken);
            done += n;
        }
        if (fua) _device.Flush();
    }

    /// <inheritdoc />
    public ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default) =>
        // Zeroing is one of the two outcomes a discard may have; it exercises the verifier's zero branch.
        WriteZeroesAsync(offset, length, unmap: true, fua: false, cancellationToken);

    /// <inheritdoc />
    public ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        _device.Flush();
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        CheckRange(offset, buffer.Length);
        var n = await _device.ReadAsync(buffer, offset, cancellationToken);
        // Past the end of a shorter file a raw disk reads zeros.
        buffer.Span[n..].Clear();
    }

    /// <inheritdoc />
    public ValueTask DisposeAsync()
    {
        if (_ownsDevice) _device.Dispose();
        return ValueTask.CompletedTask;
    }

    private void CheckRange(long offset, long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (offset > VirtualSize || length > VirtualSize - offset)
            throw new ArgumentOutOfRangeException(nameof(offset), $"range {offset}+{length} is outside the {VirtualSize}-byte disk");
    }
}
