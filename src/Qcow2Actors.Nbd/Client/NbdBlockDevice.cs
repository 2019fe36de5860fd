using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Nbd.Client;

/// <summary>
/// An NBD export as an engine <see cref="BlockDevice"/>, so a raw (or qcow2) image can be opened over it, with its
/// block status taken from the server's <c>base:allocation</c> context. Owns the client: disposing the device
/// disconnects (NBD_CMD_DISC).
/// </summary>
/// <remarks>
/// An export's size is fixed by the server: <see cref="SetLength"/> accepts only the current size and a write past
/// the end is refused (the <see cref="IBlockDevice"/> contract's "extending if needed" cannot be met).
/// <see cref="BlockDevice.PunchHole"/> keeps the base behaviour (writes zeros: NBD_CMD_TRIM does not promise zeros
/// on read-back) and <see cref="BlockDevice.ReserveSpace"/> reserves nothing (returns false).
/// </remarks>
public sealed class NbdBlockDevice : BlockDevice, IAllocationStatusDevice, IAsyncDisposable
{
    private const string BaseAllocation = Protocol.NbdProtocol.BaseAllocation;
    private const uint StateHole = 1;
    private const uint StateZero = 2;

    private readonly NbdClient _client;
    private readonly bool _hasAllocation;

    // The last block-status reply, so walking an export run by run costs one round trip per reply rather
    // than per run. Writes through the device bump the generation, dropping it and any reply in flight.
    private readonly Lock _cacheGate = new();
    private long _generation;
    private long _cachedStart;
    private IReadOnlyList<NbdExtent>? _cached;

    /// <summary>A device over <paramref name="client"/>'s export, named <paramref name="name"/> in messages (the URI it was opened by).</summary>
    public NbdBlockDevice(NbdClient client, string name)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(name);
        _client = client;
        Name = name;
        _hasAllocation = client.MetaContexts.Contains(BaseAllocation);
    }

    /// <inheritdoc />
    public override long Length => _client.Size;

    /// <inheritdoc />
    public override bool IsReadOnly => _client.IsReadOnly;

    /// <inheritdoc />
    public override string Name { get; }

    /// <inheritdoc />
    protected override async ValueTask<int> ReadCoreAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        if (offset >= Length) return 0;
        var n = (int)Math.Min(buffer.Length, Length - offset);
        await _client.ReadAsync(offset, buffer[..n], cancellationToken);
        return n;
    }

    /// <inheritdoc />
    protected override async ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        if (offset > Length - buffer.Length)
            throw new IOException(FormattableString.Invariant(
                $"{Name}: write at {offset} length {buffer.Length} is past the end of the nbd export (size {Length}); an export cannot grow"))
            { HResult = (int)NbdError.NoSpace };
        Invalidate();
        try
        {
            await _client.WriteAsync(offset, buffer, fua: false, cancellationToken);
        }
        finally
        {
            Invalidate();
        }
    }

    private void Invalidate()
    {
        lock (_cacheGate)
        {
            _generation++;
            _cached = null;
        }
    }

    /// <inheritdoc />
    protected override async ValueTask FlushCoreAsync(CancellationToken cancellationToken) => await _client.FlushAsync(cancellationToken);

    /// <inheritdoc />
    /// <exception cref="NotSupportedException">Any length other than the export's size.</exception>
    public override void SetLength(long length)
    {
        if (length != Length)
            throw new NotSupportedException(FormattableString.Invariant($"{Name}: an nbd export's size is fixed at {Length} bytes; cannot set it to {length}"));
    }

    /// <summary>
    /// The <c>base:allocation</c> run at <paramref name="offset"/>: HOLE means not allocated, ZERO reads as zeros.
    /// When the server did not agree to the context, the whole range is reported allocated and not known to be zero.
    /// </summary>
    public async ValueTask<DeviceExtent> GetAllocationAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        length = Math.Min(length, Length - offset);
        if (length <= 0)
            throw new ArgumentOutOfRangeException(nameof(offset), FormattableString.Invariant($"{Name}: offset {offset} is at or past the end (size {Length})"));
        if (!_hasAllocation) return new DeviceExtent(length, Allocated: true, Zero: false);
        long generation;
        lock (_cacheGate)
        {
            if (Cached(offset, length) is { } hit) return hit;
            generation = _generation;
        }
        var extents = await _client.BlockStatusAsync(BaseAllocation, offset, length, cancellationToken);
        lock (_cacheGate)
        {
            if (generation == _generation)
            {
                _cachedStart = offset;
                _cached = extents;
            }
        }
        return Run(extents[0], length);
    }

    /// <summary>The cached run holding <paramref name="offset"/>, clipped to start there; null on a miss. Call under the cache lock.</summary>
    private DeviceExtent? Cached(long offset, long length)
    {
        if (_cached is null || offset < _cachedStart) return null;
        var start = _cachedStart;
        foreach (var extent in _cached)
        {
            if (offset < start + extent.Length) return Run(extent with { Length = start + extent.Length - offset }, length);
            start += extent.Length;
        }
        return null;
    }

    private static DeviceExtent Run(NbdExtent extent, long length) =>
        new(Math.Min(extent.Length, length), Allocated: (extent.Flags & StateHole) == 0, Zero: (extent.Flags & StateZero) != 0);

    /// <summary>Disconnects (NBD_CMD_DISC) and waits for the server to close its side.</summary>
    public ValueTask DisposeAsync()
    {
        GC.SuppressFinalize(this);
        return _client.DisposeAsync();
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing) _client.Disconnect();
        base.Dispose(disposing);
    }
}
