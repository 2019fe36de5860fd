using Qcow2Actors.Engine;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// What <c>q2a io</c> needs from an open image: the guest-visible operations of qemu-io's
/// commands and nothing more, so the interpreter can be tested against memory and bound to
/// <see cref="Qcow2Image"/> without knowing its internals.
/// </summary>
internal interface IIoTarget : IAsyncDisposable
{
    /// <summary>Guest size in bytes.</summary>
    long Length { get; }

    /// <summary>True when the image was opened without write access (<c>-r</c>).</summary>
    bool IsReadOnly { get; }

    /// <summary>Reads guest bytes; a range past the end fails.</summary>
    ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken);

    /// <summary>Writes guest bytes; <paramref name="fua"/> makes them durable before returning.</summary>
    ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken);

    /// <summary>Makes a range read as zeros; <paramref name="unmap"/> allows freeing its clusters.</summary>
    ValueTask WriteZeroesAsync(long offset, long length, bool unmap, bool fua, CancellationToken cancellationToken);

    /// <summary>Tells the image a range is no longer needed (it may read as zeros or as before).</summary>
    ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken);

    /// <summary>Writes whole clusters compressed; the range must start and end on cluster boundaries (or the disk's end).</summary>
    ValueTask WriteCompressedAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken);

    /// <summary>Makes every completed write durable.</summary>
    ValueTask FlushAsync(CancellationToken cancellationToken);
}

/// <summary><see cref="IIoTarget"/> over a <see cref="Qcow2Image"/> (qcow2 with its backing chain, or raw).</summary>
internal sealed class Qcow2IoTarget : IIoTarget
{
    private readonly Qcow2Image _image;

    private Qcow2IoTarget(Qcow2Image image, bool readOnly)
    {
        _image = image;
        IsReadOnly = readOnly;
    }

    /// <summary>Opens <paramref name="path"/> as qemu-io does: read-write unless <paramref name="readOnly"/>.</summary>
    public static async Task<Qcow2IoTarget> OpenAsync(string path, string? format, bool readOnly, CancellationToken ct)
    {
        var image = await Qcow2Image.OpenAsync(path, new Qcow2OpenOptions { Format = format, ReadOnly = readOnly }, ct).ConfigureAwait(false);
        return new Qcow2IoTarget(image, readOnly);
    }

    /// <inheritdoc/>
    public long Length => _image.VirtualSize;

    /// <inheritdoc/>
    public bool IsReadOnly { get; }

    /// <inheritdoc/>
    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken) =>
        _image.ReadAsync(offset, buffer, cancellationToken);

    /// <inheritdoc/>
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken) =>
        _image.WriteAsync(offset, data, fua, cancellationToken);

    /// <inheritdoc/>
    public ValueTask WriteZeroesAsync(long offset, long length, bool unmap, bool fua, CancellationToken cancellationToken) =>
        _image.WriteZeroesAsync(offset, length, unmap, fua, cancellationToken);

    /// <inheritdoc/>
    public ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken) =>
        _image.DiscardAsync(offset, length, cancellationToken);

    /// <inheritdoc/>
    public async ValueTask WriteCompressedAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        // The engine compresses one cluster at a time; qemu's qcow2 likewise wants the request
        // cluster aligned, with only the disk's last cluster allowed to be short.
        int cs = _image.ClusterSize;
        long end = offset + data.Length;
        if (offset % cs != 0 || (end % cs != 0 && end != _image.VirtualSize))
            throw new ArgumentException("compressed writes must be cluster aligned");
        for (long pos = offset; pos < end; pos += cs)
        {
            int n = (int)Math.Min(cs, end - pos);
            await _image.WriteCompressedAsync(pos, data.Slice((int)(pos - offset), n), cancellationToken).ConfigureAwait(false);
        }
    }

    /// <inheritdoc/>
    public ValueTask FlushAsync(CancellationToken cancellationToken) => _image.FlushAsync(cancellationToken);

    /// <inheritdoc/>
    public ValueTask DisposeAsync() => _image.DisposeAsync();
}
