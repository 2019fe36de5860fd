using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Nbd.Exports;

/// <summary>
/// Serves a plain file byte for byte, through the engine's <see cref="IBlockDevice"/> (so
/// flush is a real fdatasync). Allocation is not tracked: block status reports everything as
/// data, which the protocol allows, and FAST_ZERO always declines.
/// </summary>
public sealed class RawFileExport : INbdExport, IDisposable
{
    private static readonly byte[] Zeroes = new byte[1024 * 1024];
    private readonly IBlockDevice _device;
    private ImageLock? _lock;
    private volatile string? _flushFailure;

    /// <summary>Serves <paramref name="device"/> under <paramref name="name"/>; the export owns and disposes the device.</summary>
    public RawFileExport(string name, IBlockDevice device, string? description = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        Name = name;
        Description = description;
        _device = device;
        Size = device.Length;
        IsReadOnly = device.IsReadOnly;
    }

    /// <summary>
    /// Opens the file at <paramref name="path"/> (read-only when <paramref name="readOnly"/>) and serves it,
    /// holding QEMU's image lock on it as qemu-nbd does (the write lock unless read-only), through the
    /// page cache or around it (<paramref name="cache"/>, as qemu-nbd's <c>--cache</c>).
    /// </summary>
    /// <param name="path">The file.</param>
    /// <param name="name">The export name.</param>
    /// <param name="readOnly">Open and export read-only.</param>
    /// <param name="cache">Through the page cache or around it.</param>
    /// <param name="allocationDepth">Offer <c>qemu:allocation-depth</c> (see <see cref="AllocationDepth"/>).</param>
    /// <exception cref="ImageLockException">Another process holds the file.</exception>
    public static RawFileExport Open(string path, string name, bool readOnly = false, CacheMode cache = CacheMode.Writeback, bool allocationDepth = false)
    {
        var imageLock = ImageLock.Acquire(path, readOnly ? LockMode.Reader : LockMode.Writer);
        try
        {
            IBlockDevice device = cache == CacheMode.None
                ? DirectFileBlockDevice.Open(path, writable: !readOnly)
                : FileBlockDevice.Open(path, writable: !readOnly);
            return new(name, device) { _lock = imageLock, AllocationDepth = allocationDepth };
        }
        catch
        {
            imageLock.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public string Name { get; }

    /// <inheritdoc/>
    public string? Description { get; }

    /// <inheritdoc/>
    /// <remarks>Set when creating the export, e.g. <c>new(...) { MetricTags = [new("tenant", "acme")] }</c>.</remarks>
    public IReadOnlyList<KeyValuePair<string, object?>> MetricTags { get; init; } = [];

    /// <inheritdoc/>
    /// <remarks>Set when creating the export, e.g. <c>new(...) { Tenant = "acme" }</c>.</remarks>
    public string? Tenant { get; init; }

    /// <inheritdoc/>
    public long Size { get; }

    /// <inheritdoc/>
    public bool IsReadOnly { get; }

    /// <inheritdoc/>
    public async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        var done = 0;
        while (done < buffer.Length)
        {
            var n = await _device.ReadAsync(buffer[done..], offset + done, cancellationToken);
            if (n == 0)
            {
                // Someone truncated the file under us: what is gone reads as zeroes, as past-EOF would.
                buffer.Span[done..].Clear();
                return;
            }
            done += n;
        }
    }

    /// <inheritdoc/>
    public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken)
    {
        ThrowIfFlushFailed();
        await _device.WriteAsync(data, offset, cancellationToken);
        if (fua) await FlushAsync(cancellationToken);
    }

    /// <inheritdoc/>
    public async ValueTask WriteZeroesAsync(long offset, long length, bool mayUnmap, bool fastZero, bool fua, CancellationToken cancellationToken)
    {
        // Without hole punching, zeroing costs as much as writing: decline, as FAST_ZERO asks.
        if (fastZero) throw new NbdException(NbdError.NotSupported, "zeroing a raw file is not faster than writing");
        ThrowIfFlushFailed();
        long done = 0;
        while (done < length)
        {
            var take = (int)Math.Min(Zeroes.Length, length - done);
            await _device.WriteAsync(Zeroes.AsMemory(0, take), offset + done, cancellationToken);
            done += take;
        }
        if (fua) await FlushAsync(cancellationToken);
    }

    /// <inheritdoc/>
    /// <remarks>Trim is a hint; a plain file keeps its bytes.</remarks>
    public ValueTask TrimAsync(long offset, long length, bool fua, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    /// <inheritdoc/>
    public async ValueTask FlushAsync(CancellationToken cancellationToken)
    {
        ThrowIfFlushFailed();
        try
        {
            // fdatasync blocks; keep it off the connection's reader and the I/O threads.
            await Task.Run(_device.Flush, cancellationToken);
        }
        catch (IOException ex)
        {
            // A failed fsync is final (the kernel may have dropped the dirty pages): refuse from now on.
            _flushFailure = ex.Message;
            throw new NbdException(NbdError.IoError, $"flush failed: {ex.Message}", ex);
        }
    }

    /// <inheritdoc/>
    public ValueTask<IReadOnlyList<NbdExtent>> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyList<NbdExtent>>([new NbdExtent(length, NbdExtentFlags.None)]);

    /// <inheritdoc/>
    /// <remarks>Set when creating the export (<c>q2a serve -A</c>); a raw file has no backing chain, so every byte is at depth 1, as qemu-nbd reports it.</remarks>
    public bool AllocationDepth { get; init; }

    /// <inheritdoc/>
    public ValueTask<IReadOnlyList<NbdMetaExtent>> GetAllocationDepthAsync(long offset, long length, CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyList<NbdMetaExtent>>([new NbdMetaExtent(length, 1)]);

    private void ThrowIfFlushFailed()
    {
        if (_flushFailure is { } reason) throw new NbdException(NbdError.IoError, $"an earlier flush failed ({reason}); the export no longer accepts writes");
    }

    /// <summary>Closes the file.</summary>
    public void Dispose()
    {
        _device.Dispose();
        _lock?.Dispose();
    }
}
