using Microsoft.Win32.SafeHandles;

namespace Qcow2Actors.Engine.Device;

/// <summary>
/// The host file as a block device through the page cache (<c>cache=writeback</c>): positional reads
/// and writes through <see cref="RandomAccess"/> (no shared file position, so any number of threads
/// may read and write concurrently), and fdatasync for durability.
/// </summary>
/// <remarks>
/// Writes of 256 KiB and more in whole sectors go around the page cache (<see cref="DirectLargeWrites"/>).
/// Every operation runs on the calling thread. The handle is not opened for asynchronous I/O (Linux
/// has no asynchronous buffered file I/O short of io_uring), so RandomAccess would only queue the same
/// blocking pread to the thread pool and hop back: callers (NBD requests, actors) already run on pool
/// threads, and the inline call saves two thread switches per I/O. A caller that must not block (the
/// NBD server, for a read that missed the page cache) can instead start the read on the process's
/// io_uring (<see cref="IAsyncHostRead"/>, <see cref="IoUringReadRing"/>) where the system has one.
/// <para>Those two small-read paths go through a second handle on the same file that keeps the kernel's
/// readahead heuristics; the device's own handle is opened with POSIX_FADV_RANDOM. Each suits its readers
/// (measured, bench/results/readahead-2026-12-02.md): with readahead on, concurrent 1 MiB reads from the
/// pool took twice the CPU and up to half the throughput; with it off, a small read that misses reads just
/// its own pages, where the kernel would otherwise read ahead over a run it finds cached before the miss,
/// so random 4 KiB reads of a cold file warmed the cache far more slowly (cold random reads over NBD:
/// 42-53k IOPS against 53-67k, and ~30 % more CPU per read).</para>
/// </remarks>
public sealed class FileBlockDevice : BlockDevice, INonBlockingRead, IAsyncHostRead, IFileRangeSource, IHostFileLayout
{
    private readonly SafeFileHandle _handle;
    // The ring for asynchronous reads: a chosen one, or (_sharedRing) the process's, looked up only when a read
    // is started, so short-lived opens (info, check, create) never start the ring's thread (an image opened through
    // Qcow2OpenOptions.OpenDevice makes it at open).
    private readonly IoUringReadRing? _ring;
    private readonly bool _sharedRing;
    private readonly DirectLargeWrites? _direct;
    private readonly SequentialPrefetch _prefetch = new();
    private readonly Lock _gate = new();
    // The handle with readahead for the small-read paths: null until first asked for, then either its own
    // handle or _handle (no second handle here); _closed once disposed.
    private SafeFileHandle? _readAheadHandle;
    private bool _closed;

    private FileBlockDevice(SafeFileHandle handle, string path, bool readOnly, IoUringReadRing? ring, bool sharedRing)
    {
        _handle = handle;
        Name = path;
        IsReadOnly = readOnly;
        _ring = ring;
        _sharedRing = sharedRing;
        _direct = readOnly ? null : new DirectLargeWrites(handle, path);
    }

    /// <summary>
    /// Opens an existing file; read-only unless <paramref name="writable"/>. The handle takes no image
    /// lock (<see cref="ImageLock"/> does that, once per open image) and shares everything, so .NET's
    /// flock (a shared one for any sharing mode) never makes two of our handles fight.
    /// </summary>
    public static FileBlockDevice Open(string path, bool writable) => Open(path, writable, ring: null, sharedRing: true);

    /// <summary><see cref="Open(string, bool)"/> with a chosen ring for asynchronous reads (null: none, every read is a pread).</summary>
    internal static FileBlockDevice Open(string path, bool writable, IoUringReadRing? ring) => Open(path, writable, ring, sharedRing: false);

    private static FileBlockDevice Open(string path, bool writable, IoUringReadRing? ring, bool sharedRing)
    {
        var access = writable ? FileAccess.ReadWrite : FileAccess.Read;
        var handle = File.OpenHandle(path, FileMode.Open, access, FileShare.ReadWrite, FileOptions.RandomAccess);
        return new FileBlockDevice(handle, path, !writable, ring, sharedRing);
    }

    /// <summary>Creates a new file (failing if it exists unless <paramref name="overwrite"/>), opened read-write.</summary>
    public static FileBlockDevice Create(string path, bool overwrite = false)
    {
        var handle = File.OpenHandle(path, overwrite ? FileMode.Create : FileMode.CreateNew, FileAccess.ReadWrite,
            FileShare.ReadWrite, FileOptions.RandomAccess);
        return new FileBlockDevice(handle, path, false, ring: null, sharedRing: true);
    }

    /// <inheritdoc />
    public override string Name { get; }

    /// <inheritdoc />
    public override bool IsReadOnly { get; }

    /// <inheritdoc />
    public override long Length => RandomAccess.GetLength(_handle);

    /// <inheritdoc />
    protected override ValueTask<int> ReadCoreAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        // Hinted before this read waits, so the disk has the stream's next requests queued behind it.
        var (ahead, length) = _prefetch.OnRead(offset, buffer.Length);
        if (length > 0) HostFileCalls.WillNeed(_handle, ahead, length);
        return new(HostFileCalls.ReadFully(_handle, buffer.Span, offset));
    }

    /// <inheritdoc />
    bool INonBlockingRead.TryReadNow(Span<byte> buffer, long offset) =>
        HostFileCalls.TryReadNoWait(ReadAheadHandle, buffer, offset);

    /// <inheritdoc />
    bool IAsyncHostRead.TryStartRead(byte[] buffer, int index, int count, long offset, IHostReadCompletion completion) =>
        (_sharedRing ? IoUringReadRing.Shared : _ring) is { } ring && ring.TryStartRead(ReadAheadHandle, Name, buffer, index, count, offset, completion);

    /// <inheritdoc />
    /// <remarks>
    /// Counts as a read of the range for the sequential prefetch, so a stream sent from the file keeps the disk
    /// ahead of it. A range not all cached whose readahead was asked for waits for its last byte: the readahead
    /// brings pages in order, so once the last is in, the rest usually are, which cachestat then confirms. One
    /// nobody is reading in (a cold random read) is left to the ordinary read at once, which reads it in one go.
    /// </remarks>
    SafeFileHandle? IFileRangeSource.TryPinCached(long offset, int count)
    {
        if (!HostFileCalls.CanTellCached || count <= 0) return null;
        var (ahead, length) = _prefetch.OnRead(offset, count);
        if (length > 0) HostFileCalls.WillNeed(_handle, ahead, length);
        bool added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            // QEMU may leave the last cluster short: those bytes read as zeros, which a file send cannot give.
            if (offset + count > RandomAccess.GetLength(_handle)) return null;
            if (!HostFileCalls.IsCached(_handle, offset, count)
                && (!_prefetch.Hinted(offset + count) || !HostFileCalls.TouchByte(_handle, offset + count - 1)
                    || !HostFileCalls.IsCached(_handle, offset, count)))
                return null;
            added = false; // the caller's now
            return _handle;
        }
        catch (ObjectDisposedException)
        {
            return null;
        }
        finally
        {
            if (added) _handle.DangerousRelease();
        }
    }

    private SafeFileHandle ReadAheadHandle => Volatile.Read(ref _readAheadHandle) ?? OpenReadAheadHandle();

    private SafeFileHandle OpenReadAheadHandle()
    {
        lock (_gate)
        {
            if (_readAheadHandle is { } open) return open;
            if (_closed) return _handle; // disposed: the small reads take a reference on it, fail, and say no
            SafeFileHandle handle;
            try
            {
                handle = HostFileCalls.Reopen(_handle, FileAccess.Read, FileOptions.None);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or PlatformNotSupportedException)
            {
                handle = _handle; // no second handle: the small reads go without readahead, as the rest do
            }
            Volatile.Write(ref _readAheadHandle, handle);
            return handle;
        }
    }

    /// <inheritdoc />
    protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        // Large whole-sector writes pass the page cache by (DirectLargeWrites says why).
        if (_direct is null || !_direct.TryWrite(buffer.Span, offset)) RandomAccess.Write(_handle, buffer.Span, offset);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    protected override ValueTask FlushCoreAsync(CancellationToken cancellationToken)
    {
        if (!IsReadOnly) HostFileCalls.Sync(_handle, Name);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public override void SetLength(long length) => RandomAccess.SetLength(_handle, length);

    long IHostFileLayout.AllocatedBytes => HostFileHoles.AllocatedBytes(_handle);

    HostFileRun? IHostFileLayout.GetRun(long offset, long length) => HostFileHoles.GetRun(_handle, Length, offset, length);

    /// <inheritdoc />
    /// <remarks>
    /// fallocate(PUNCH_HOLE|KEEP_SIZE) on Linux; where the filesystem or OS cannot punch holes
    /// (EOPNOTSUPP, ENOSYS), zeros are written instead so the range still reads as zeros.
    /// </remarks>
    public override void PunchHole(long offset, long length)
    {
        if (length <= 0) return;
        if (!HostFileCalls.TryPunchHole(_handle, Name, offset, length)) ZeroFill.Write(this, offset, length);
    }

    /// <inheritdoc />
    /// <remarks>fallocate(KEEP_SIZE) on Linux; false where the filesystem or OS has no preallocation.</remarks>
    public override bool ReserveSpace(long offset, long length) => HostFileCalls.ReserveSpace(_handle, Name, offset, length);

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (!disposing) return;
        _direct?.Dispose();
        lock (_gate)
        {
            _closed = true;
            if (_readAheadHandle is { } readAhead && readAhead != _handle) readAhead.Dispose();
        }
        _handle.Dispose();
    }
}
