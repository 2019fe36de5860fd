namespace Qcow2Actors.Engine.Read;

/// <summary>
/// One image of a backing chain (qcow2 or raw), read-only. The top of the chain is what a
/// <see cref="Qcow2Image"/> reads through; unallocated ranges fall through to <see cref="Backing"/>.
/// </summary>
internal interface IImageLayer : IAsyncDisposable
{
    /// <summary>The file name as QEMU would print it (backing names are combined with the overlay's directory).</summary>
    string FileName { get; }

    /// <summary>"qcow2" or "raw".</summary>
    string Format { get; }

    /// <summary>Guest size in bytes.</summary>
    long Size { get; }

    IImageLayer? Backing { get; }

    /// <summary>Fills <paramref name="buffer"/> from guest <paramref name="offset"/>; the range must lie within <see cref="Size"/>.</summary>
    ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken);

    /// <summary>
    /// Block status of the run starting at <paramref name="offset"/> (at most <paramref name="length"/>
    /// bytes, within <see cref="Size"/>), with QEMU's generic-layer rules applied: an unallocated run
    /// reads as zero when there is no backing file or it starts past the backing file's end.
    /// </summary>
    ValueTask<LayerStatus> GetStatusAsync(long offset, long length, CancellationToken cancellationToken);
}

/// <summary>
/// QEMU's block status flags for one run of one layer: <see cref="Data"/> (BDRV_BLOCK_DATA),
/// <see cref="Zero"/> (BDRV_BLOCK_ZERO), <see cref="Allocated"/> (BDRV_BLOCK_ALLOCATED: this layer
/// decides the content), and the host offset when valid (BDRV_BLOCK_OFFSET_VALID) in <see cref="File"/>.
/// </summary>
internal readonly record struct LayerStatus(long Length, bool Data, bool Zero, bool Allocated, long HostOffset, string? File)
{
    public bool HasHostOffset => HostOffset >= 0;
}
