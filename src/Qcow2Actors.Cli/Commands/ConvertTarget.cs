using Microsoft.Win32.SafeHandles;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Cli.Commands;

/// <summary>Where <c>q2a convert</c> writes: a raw file or a qcow2 image open on the write engine.</summary>
internal interface IConvertTarget : IAsyncDisposable
{
    /// <summary>The target's cluster size (qcow2), or 0 (raw): zero detection never splits a cluster.</summary>
    int ClusterSize { get; }

    /// <summary>The target's size in bytes.</summary>
    long Size { get; }

    /// <summary>Writes guest data at <paramref name="offset"/>.</summary>
    ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct);

    /// <summary>Makes [offset, offset+length) read as zeros.</summary>
    ValueTask WriteZeroesAsync(long offset, long length, CancellationToken ct);

    /// <summary>Writes one whole cluster compressed (qcow2 only).</summary>
    ValueTask WriteCompressedAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct);
}

/// <summary>
/// A raw target. A new one is created empty and sparse; an existing one is locked (QEMU's write
/// lock, held to the end) before it is cut, as <c>dd</c> does, so a file another process has open is
/// refused before anything of it changes; with <c>-n</c> it is opened as it is, locked, and must be
/// at least as large as the source. Writes go through the page cache, flushed once at the end.
/// </summary>
internal sealed class RawConvertTarget : IConvertTarget
{
    private const int ZeroChunk = 1024 * 1024;
    private static readonly byte[] Zeros = new byte[ZeroChunk];
    private readonly SafeFileHandle _handle;
    private readonly ImageLock? _lock;

    private RawConvertTarget(SafeFileHandle handle, ImageLock? imageLock, long size)
    {
        _handle = handle;
        _lock = imageLock;
        Size = size;
    }

    public int ClusterSize => 0;

    public long Size { get; }

    /// <summary>Creates (or replaces) <paramref name="path"/> with <paramref name="size"/> zero bytes, or with <paramref name="existing"/> opens it as it is.</summary>
    public static RawConvertTarget Open(string path, long size, bool existing)
    {
        if (existing && !File.Exists(path))
            throw new CliException($"Could not open '{path}': Could not open '{path}': No such file or directory");
        bool existed = File.Exists(path);
        SafeFileHandle? handle = null;
        ImageLock? imageLock = null;
        try
        {
            handle = File.OpenHandle(path, existing ? FileMode.Open : FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite);
            // A file we just created is nobody else's; one that was there may be open elsewhere.
            if (existed) imageLock = ImageLock.Acquire(path, LockMode.Writer);
            if (existing)
            {
                if (RandomAccess.GetLength(handle) < size) throw new CliException("output file is smaller than input file");
            }
            else
            {
                RandomAccess.SetLength(handle, 0);
                RandomAccess.SetLength(handle, size);
            }
            return new RawConvertTarget(handle, imageLock, size);
        }
        catch
        {
            imageLock?.Dispose();
            handle?.Dispose();
            throw;
        }
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct) => RandomAccess.WriteAsync(_handle, data, offset, ct);

    public async ValueTask WriteZeroesAsync(long offset, long length, CancellationToken ct)
    {
        for (long end = offset + length; offset < end; offset += ZeroChunk)
            await RandomAccess.WriteAsync(_handle, Zeros.AsMemory(0, (int)Math.Min(ZeroChunk, end - offset)), offset, ct).ConfigureAwait(false);
    }

    public ValueTask WriteCompressedAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct) =>
        throw new NotSupportedException("Compression not supported for this file format");

    /// <summary>Flushes the file to disk (once, at the end of a successful copy).</summary>
    public void Flush() => RandomAccess.FlushToDisk(_handle);

    public ValueTask DisposeAsync()
    {
        _lock?.Dispose();
        _handle.Dispose();
        return ValueTask.CompletedTask;
    }
}

/// <summary>
/// A qcow2 target open for writing on the engine. A new one is created beside the target under a
/// temporary name, write-locked, renamed over the target and opened with that lock handed to the
/// engine (<see cref="Qcow2OpenOptions.WriteLock"/>): from creation to close no other process can
/// open it. An existing target that another process holds is refused before it is replaced.
/// </summary>
internal sealed class Qcow2ConvertTarget : IConvertTarget
{
    private readonly ImageHost _host;
    private readonly Qcow2Image _image;

    private Qcow2ConvertTarget(ImageHost host, Qcow2Image image)
    {
        _host = host;
        _image = image;
    }

    public int ClusterSize => _image.ClusterSize;

    public long Size => _image.VirtualSize;

    /// <summary>The image written.</summary>
    public Qcow2Image Image => _image;

    /// <summary>
    /// Creates <paramref name="path"/> with <paramref name="options"/> (replacing a file nobody holds)
    /// and opens it, locked throughout. <paramref name="beforeOpen"/> runs between creation and open
    /// (a test hold point).
    /// </summary>
    public static async Task<Qcow2ConvertTarget> CreateAsync(string path, Qcow2CreateOptions options, CacheMode cache,
        Func<Task>? beforeOpen, CancellationToken ct)
    {
        string full = Path.GetFullPath(path);
        string temp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.q2a-{Guid.NewGuid():N}");
        ImageLock? writeLock = null;
        try
        {
            // qemu-img replaces a target, but never one another process has open: hold it until it is gone.
            using (File.Exists(path) ? ImageLock.Acquire(path, LockMode.Creator) : null)
            {
                ImageCreator.Create(temp, options);
                writeLock = ImageLock.Acquire(temp, LockMode.Writer, path);
                File.Move(temp, full, overwrite: true);
            }
        }
        catch
        {
            writeLock?.Dispose();
            if (File.Exists(temp)) File.Delete(temp);
            throw;
        }
        try
        {
            if (beforeOpen is not null) await beforeOpen().ConfigureAwait(false);
        }
        catch
        {
            writeLock.Dispose();
            throw;
        }
        return await OpenAsync(path, cache, writeLock, ct).ConfigureAwait(false);
    }

    /// <summary>Opens an existing qcow2 image for writing (<c>-n</c>), taking its write lock, or adopting <paramref name="writeLock"/>.</summary>
    public static async Task<Qcow2ConvertTarget> OpenAsync(string path, CacheMode cache, ImageLock? writeLock, CancellationToken ct)
    {
        // qemu-img -n -O qcow2 opens the target as qcow2: anything else is refused by its magic.
        if (writeLock is null && File.Exists(path) && !FormatProbe.IsQcow2(path)) throw new CliException($"Could not open '{path}': Image is not in qcow2 format");
#pragma warning disable CA2000 // Owned by the returned target, which disposes it; the failure path below disposes it.
        var host = ImageHost.Create();
#pragma warning restore CA2000
        try
        {
            var image = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false, Format = "qcow2", Cache = cache, WriteLock = writeLock }, ct)
                .ConfigureAwait(false);
            return new Qcow2ConvertTarget(host, image);
        }
        catch
        {
            await host.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct) => _image.WriteAsync(offset, data, false, ct);

    public ValueTask WriteZeroesAsync(long offset, long length, CancellationToken ct) => _image.WriteZeroesAsync(offset, length, false, false, ct);

    public ValueTask WriteCompressedAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct) => _image.WriteCompressedAsync(offset, data, ct);

    public async ValueTask DisposeAsync()
    {
        try
        {
            // A clean close: checkpoint, journal truncated, header bits cleared.
            await _image.DisposeAsync().ConfigureAwait(false);
        }
        finally
        {
            await _host.DisposeAsync().ConfigureAwait(false);
        }
    }
}
