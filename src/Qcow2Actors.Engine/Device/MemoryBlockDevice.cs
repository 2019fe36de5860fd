namespace Qcow2Actors.Engine.Device;

/// <summary>
/// An in-memory <see cref="IBlockDevice"/> for tests: a growable byte array behind a lock.
/// <see cref="BlockDevice.Flush"/> is a no-op that only counts calls, since memory has no volatile cache
/// to drain; crash and tear simulation belongs in chaos/'s recording device, not here.
/// </summary>
public sealed class MemoryBlockDevice : BlockDevice
{
    private readonly Lock _gate = new();
    private byte[] _data;
    private long _length;
    private int _flushes;
    private bool _disposed;

    /// <summary>Creates an empty writable device.</summary>
    public MemoryBlockDevice(string name = "memory") : this(Array.Empty<byte>(), name, readOnly: false)
    {
    }

    /// <summary>Creates a device holding a copy of <paramref name="content"/>.</summary>
    public MemoryBlockDevice(ReadOnlySpan<byte> content, string name = "memory", bool readOnly = false)
    {
        _data = content.ToArray();
        _length = content.Length;
        Name = name;
        IsReadOnly = readOnly;
    }

    /// <inheritdoc />
    public override string Name { get; }

    /// <inheritdoc />
    public override bool IsReadOnly { get; }

    /// <summary>How many times <see cref="BlockDevice.Flush"/> succeeded; lets tests assert group commits.</summary>
    public int FlushCount => Volatile.Read(ref _flushes);

    /// <inheritdoc />
    public override long Length
    {
        get { lock (_gate) return _length; }
    }

    /// <summary>A copy of the current content.</summary>
    public byte[] ToArray()
    {
        lock (_gate) return _data.AsSpan(0, checked((int)_length)).ToArray();
    }

    /// <inheritdoc />
    protected override ValueTask<int> ReadCoreAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        lock (_gate)
        {
            ThrowIfDisposed();
            if (offset >= _length) return new(0);
            var n = (int)Math.Min(buffer.Length, _length - offset);
            _data.AsSpan((int)offset, n).CopyTo(buffer.Span);
            return new(n);
        }
    }

    /// <inheritdoc />
    protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        lock (_gate)
        {
            ThrowIfDisposed();
            ThrowIfReadOnly();
            var end = checked(offset + buffer.Length);
            EnsureCapacity(end);
            buffer.Span.CopyTo(_data.AsSpan((int)offset));
            if (end > _length) _length = end;
        }
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    protected override ValueTask FlushCoreAsync(CancellationToken cancellationToken)
    {
        lock (_gate) ThrowIfDisposed();
        Interlocked.Increment(ref _flushes);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public override void SetLength(long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        lock (_gate)
        {
            ThrowIfDisposed();
            ThrowIfReadOnly();
            EnsureCapacity(length);
            // Bytes past a shrink must read back as zeros if the device grows again, as a file's would.
            if (length < _length) _data.AsSpan((int)length, (int)(_length - length)).Clear();
            _length = length;
        }
    }

    /// <inheritdoc />
    /// <remarks>Zeros the range inside the current length (memory has nothing to give back); the length stays.</remarks>
    public override void PunchHole(long offset, long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        lock (_gate)
        {
            ThrowIfDisposed();
            ThrowIfReadOnly();
            if (offset >= _length) return;
            _data.AsSpan((int)offset, (int)Math.Min(length, _length - offset)).Clear();
            Interlocked.Increment(ref _punches);
        }
    }

    /// <summary>How many times <see cref="PunchHole"/> zeroed a range; lets tests see that space was given back.</summary>
    public int PunchCount => Volatile.Read(ref _punches);

    private int _punches;

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        lock (_gate) _disposed = true;
    }

    private void EnsureCapacity(long needed)
    {
        if (needed <= _data.Length) return;
        if (needed > Array.MaxLength) throw new IOException($"{Name}: {needed} bytes exceed what a memory device can hold");
        var size = Math.Max(needed, Math.Min((long)Array.MaxLength, Math.Max(4096L, (long)_data.Length * 2)));
        Array.Resize(ref _data, (int)size);
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    private void ThrowIfReadOnly()
    {
        if (IsReadOnly) throw new IOException($"{Name} is read-only");
    }
}
