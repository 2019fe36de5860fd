using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Chaos.Devices;

/// <summary>Counts the calls every <see cref="SharedDeviceHandle"/> of one device made, so a test can aim a power cut or prove a flush was not retried.</summary>
public sealed class DeviceCallCounters
{
    private long _reads;
    private long _writes;
    private long _flushes;
    private long _setLengths;
    private long _opened;
    private long _disposed;

    /// <summary>Reads issued.</summary>
    public long Reads => Interlocked.Read(ref _reads);

    /// <summary>Writes issued (including failed ones).</summary>
    public long Writes => Interlocked.Read(ref _writes);

    /// <summary>Flushes issued (including failed ones): a retried fsync shows here.</summary>
    public long Flushes => Interlocked.Read(ref _flushes);

    /// <summary>Length changes issued.</summary>
    public long SetLengths => Interlocked.Read(ref _setLengths);

    /// <summary>Writes, flushes and length changes: the unit <see cref="CrashSimulatingDevice.PowerCutAfter"/> counts.</summary>
    public long Mutations => Writes + Flushes + SetLengths;

    /// <summary>Handles handed out.</summary>
    public long Opened => Interlocked.Read(ref _opened);

    /// <summary>Handles the engine disposed.</summary>
    public long Disposed => Interlocked.Read(ref _disposed);

    internal void Read() => Interlocked.Increment(ref _reads);

    internal void Write() => Interlocked.Increment(ref _writes);

    internal void Flush() => Interlocked.Increment(ref _flushes);

    internal void SetLength() => Interlocked.Increment(ref _setLengths);

    internal void Open() => Interlocked.Increment(ref _opened);

    internal void Dispose() => Interlocked.Increment(ref _disposed);
}

/// <summary>
/// A handle on a device that someone else owns: disposing it closes the handle, not the device.
/// What <c>Qcow2OpenOptions.DeviceFactory</c> must return for a shared simulated disk, since the
/// engine disposes every device it opens while the test still needs the disk to crash it.
/// </summary>
public sealed class SharedDeviceHandle : BlockDevice
{
    private readonly IBlockDevice _device;
    private readonly DeviceCallCounters? _counters;
    private int _disposed;

    /// <summary>A handle on <paramref name="device"/>, counting calls into <paramref name="counters"/> when given.</summary>
    public SharedDeviceHandle(IBlockDevice device, DeviceCallCounters? counters = null, bool readOnly = false)
    {
        ArgumentNullException.ThrowIfNull(device);
        _device = device;
        _counters = counters;
        IsReadOnly = readOnly;
        counters?.Open();
    }

    /// <inheritdoc />
    public override long Length
    {
        get
        {
            ThrowIfDisposed();
            return _device.Length;
        }
    }

    /// <inheritdoc />
    public override bool IsReadOnly { get; }

    /// <inheritdoc />
    public override string Name => _device.Name;

    /// <inheritdoc />
    protected override ValueTask<int> ReadCoreAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        ThrowIfDisposed();
        _counters?.Read();
        return _device.ReadAsync(buffer, offset, cancellationToken);
    }

    /// <inheritdoc />
    protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        ThrowIfWriteDenied();
        _counters?.Write();
        return _device.WriteAsync(buffer, offset, cancellationToken);
    }

    /// <inheritdoc />
    protected override ValueTask FlushCoreAsync(CancellationToken cancellationToken)
    {
        ThrowIfDisposed();
        if (IsReadOnly) return ValueTask.CompletedTask;
        _counters?.Flush();
        return _device.FlushAsync(cancellationToken);
    }

    /// <inheritdoc />
    public override void SetLength(long length)
    {
        ThrowIfWriteDenied();
        _counters?.SetLength();
        _device.SetLength(length);
    }

    /// <summary>Closes this handle only.</summary>
    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (Interlocked.Exchange(ref _disposed, 1) == 0) _counters?.Dispose();
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

    private void ThrowIfWriteDenied()
    {
        ThrowIfDisposed();
        if (IsReadOnly) throw new ChaosIOException(Name, "write", Errno.EROFS, "handle opened read-only");
    }
}
