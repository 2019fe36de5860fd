using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Device;

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

    /// <summary>
    /// Opens <paramref name="path"/> as qemu-io does: read-write unless <paramref name="readOnly"/>;
    /// a raw image opened read-write is a <see cref="RawFileIoTarget"/>.
    /// </summary>
    public static async Task<IIoTarget> OpenAsync(string path, string? format, bool readOnly, CancellationToken ct, bool forceShare = false)
    {
        if (!readOnly && (format == "raw" || (format is null && RawFileIoTarget.LooksRaw(path))))
            return RawFileIoTarget.Open(path);
        var image = await Qcow2Image.OpenAsync(path, new Qcow2OpenOptions { Format = format, ReadOnly = readOnly, ForceShare = forceShare }, ct)
            .ConfigureAwait(false);
        return new Qcow2IoTarget(image, readOnly);
    }

    /// <summary>A read-only target over an image already open (one on an NBD export).</summary>
    public static IIoTarget Over(Qcow2Image image) => new Qcow2IoTarget(image, readOnly: true);

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

/// <summary>
/// <see cref="IIoTarget"/> over a raw file opened read-write. The engine's read-write path is
/// qcow2 only, and a raw file needs no metadata, so plain positioned file I/O is the whole job.
/// Zeroes and discards write zeros: after a discard a raw file reads as zeros in QEMU too
/// (it punches a hole), and .NET has no portable hole punching.
/// </summary>
internal sealed class RawFileIoTarget : IIoTarget
{
    private const int ZeroChunk = 1 << 20;
    private readonly Microsoft.Win32.SafeHandles.SafeFileHandle _file;
    private readonly ImageLock _lock;

    private RawFileIoTarget(Microsoft.Win32.SafeHandles.SafeFileHandle file, ImageLock imageLock)
    {
        _file = file;
        _lock = imageLock;
    }

    /// <summary>Opens <paramref name="path"/> for reading and writing, under the image write lock as qemu-io takes it.</summary>
    public static RawFileIoTarget Open(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Could not open '{path}': No such file or directory", path);
        var imageLock = ImageLock.Acquire(path, LockMode.Writer);
        try
        {
            return new RawFileIoTarget(File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, FileOptions.RandomAccess), imageLock);
        }
        catch
        {
            imageLock.Dispose();
            throw;
        }
    }

    /// <summary>True unless the first four bytes are the qcow2 magic: qemu's probe, for the formats q2a knows.</summary>
    public static bool LooksRaw(string path)
    {
        if (!File.Exists(path)) return false;
        using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        Span<byte> magic = stackalloc byte[4];
        int n = RandomAccess.Read(file, magic, 0);
        return n < 4 || !magic.SequenceEqual((ReadOnlySpan<byte>)[0x51, 0x46, 0x49, 0xfb]);
    }

    /// <inheritdoc/>
    public long Length => RandomAccess.GetLength(_file);

    /// <inheritdoc/>
    public bool IsReadOnly => false;

    /// <inheritdoc/>
    public async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        CheckRange(offset, buffer.Length);
        int done = 0;
        while (done < buffer.Length)
        {
            int n = await RandomAccess.ReadAsync(_file, buffer[done..], offset + done, cancellationToken).ConfigureAwait(false);
            if (n == 0) throw new IOException("unexpected end of file");
            done += n;
        }
    }

    /// <inheritdoc/>
    public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken)
    {
        CheckRange(offset, data.Length);
        await RandomAccess.WriteAsync(_file, data, offset, cancellationToken).ConfigureAwait(false);
        if (fua) RandomAccess.FlushToDisk(_file);
    }

    /// <inheritdoc/>
    public async ValueTask WriteZeroesAsync(long offset, long length, bool unmap, bool fua, CancellationToken cancellationToken)
    {
        CheckRange(offset, length);
        var zeros = new byte[(int)Math.Min(ZeroChunk, Math.Max(length, 1))];
        for (long pos = offset, end = offset + length; pos < end; pos += zeros.Length)
            await RandomAccess.WriteAsync(_file, zeros.AsMemory(0, (int)Math.Min(zeros.Length, end - pos)), pos, cancellationToken).ConfigureAwait(false);
        if (fua) RandomAccess.FlushToDisk(_file);
    }

    /// <inheritdoc/>
    public ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken) =>
        WriteZeroesAsync(offset, length, unmap: true, fua: false, cancellationToken);

    /// <inheritdoc/>
    public ValueTask WriteCompressedAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken) =>
        throw new NotSupportedException("raw images cannot store compressed data");

    /// <inheritdoc/>
    public ValueTask FlushAsync(CancellationToken cancellationToken)
    {
        RandomAccess.FlushToDisk(_file);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    public ValueTask DisposeAsync()
    {
        _file.Dispose();
        _lock.Dispose();
        return ValueTask.CompletedTask;
    }

    // QEMU's block layer answers a request past the end with EIO; Qcow2Image throws this for it.
    private void CheckRange(long offset, long length)
    {
        if (offset < 0 || length < 0 || offset > Length - length)
            throw new ArgumentOutOfRangeException(nameof(offset), $"range {offset}+{length} is outside the {Length}-byte disk");
    }
}
