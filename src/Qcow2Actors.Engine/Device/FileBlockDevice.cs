using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Qcow2Actors.Engine.Device;

/// <summary>
/// The host file as a block device: positional reads and writes through
/// <see cref="RandomAccess"/> (no shared file position, so any number of threads may
/// read and write concurrently), and fdatasync for durability.
/// </summary>
public sealed partial class FileBlockDevice : IBlockDevice
{
    private readonly SafeFileHandle _handle;

    private FileBlockDevice(SafeFileHandle handle, string path, bool readOnly)
    {
        _handle = handle;
        Name = path;
        IsReadOnly = readOnly;
    }

    /// <summary>
    /// Opens an existing file; read-only unless <paramref name="writable"/>. The handle takes no image
    /// lock (<see cref="ImageLock"/> does that, once per open image) and shares everything, so .NET's
    /// flock (a shared one for any sharing mode) never makes two of our handles fight.
    /// </summary>
    public static FileBlockDevice Open(string path, bool writable)
    {
        var access = writable ? FileAccess.ReadWrite : FileAccess.Read;
        var handle = File.OpenHandle(path, FileMode.Open, access, FileShare.ReadWrite, FileOptions.RandomAccess);
        return new FileBlockDevice(handle, path, !writable);
    }

    /// <summary>Creates a new file (failing if it exists unless <paramref name="overwrite"/>), opened read-write.</summary>
    public static FileBlockDevice Create(string path, bool overwrite = false)
    {
        var handle = File.OpenHandle(path, overwrite ? FileMode.Create : FileMode.CreateNew, FileAccess.ReadWrite,
            FileShare.ReadWrite, FileOptions.RandomAccess);
        return new FileBlockDevice(handle, path, false);
    }

    /// <inheritdoc />
    public string Name { get; }

    /// <inheritdoc />
    public bool IsReadOnly { get; }

    /// <inheritdoc />
    public long Length => RandomAccess.GetLength(_handle);

    /// <inheritdoc />
    public int Read(Span<byte> buffer, long offset)
    {
        var total = 0;
        while (total < buffer.Length)
        {
            var n = RandomAccess.Read(_handle, buffer[total..], offset + total);
            if (n == 0) break;
            total += n;
        }
        return total;
    }

    /// <inheritdoc />
    /// <remarks>
    /// Runs on the calling thread. The handle is not opened for asynchronous I/O (Linux has no
    /// asynchronous buffered file I/O short of io_uring), so RandomAccess would only queue the same
    /// blocking pread to the thread pool and hop back: callers (NBD requests, actors) already run on
    /// pool threads, and the inline call saves two thread switches per I/O.
    /// </remarks>
    public ValueTask<int> ReadAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken = default) =>
        InlineRead.Run(this, buffer, offset, cancellationToken);

    /// <inheritdoc />
    public void Write(ReadOnlySpan<byte> buffer, long offset) => RandomAccess.Write(_handle, buffer, offset);

    /// <inheritdoc />
    /// <remarks>Runs on the calling thread, for the reason given on <see cref="ReadAsync"/>.</remarks>
    public ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken = default)
    {
        if (cancellationToken.IsCancellationRequested) return ValueTask.FromCanceled(cancellationToken);
        try
        {
            RandomAccess.Write(_handle, buffer.Span, offset);
            return ValueTask.CompletedTask;
        }
        catch (Exception ex)
        {
            return ValueTask.FromException(ex);
        }
    }

    /// <inheritdoc />
    public void Flush()
    {
        if (IsReadOnly) return;
        if (OperatingSystem.IsLinux())
        {
            if (FdDataSync((int)_handle.DangerousGetHandle()) != 0)
                throw new IOException($"fdatasync failed on {Name}: errno {Marshal.GetLastPInvokeError()}");
        }
        else
        {
            using var fs = new FileStream(_handle, FileAccess.ReadWrite);
            fs.Flush(flushToDisk: true);
        }
    }

    /// <inheritdoc />
    public void SetLength(long length) => RandomAccess.SetLength(_handle, length);

    /// <inheritdoc />
    /// <remarks>
    /// fallocate(PUNCH_HOLE|KEEP_SIZE) on Linux; where the filesystem or OS cannot punch holes
    /// (EOPNOTSUPP, ENOSYS), zeros are written instead so the range still reads as zeros.
    /// </remarks>
    public void PunchHole(long offset, long length)
    {
        if (length <= 0) return;
        if (OperatingSystem.IsLinux())
        {
            if (FAllocate((int)_handle.DangerousGetHandle(), FallocFlPunchHole | FallocFlKeepSize, offset, length) == 0) return;
            int errno = Marshal.GetLastPInvokeError();
            if (errno is not (Eopnotsupp or Enosys))
                throw new IOException($"punching a hole at {offset} (+{length}) in {Name} failed: errno {errno}", errno);
        }
        ZeroFill.Write(this, offset, length);
    }

    /// <inheritdoc />
    /// <remarks>fallocate(KEEP_SIZE) on Linux; false where the filesystem or OS has no preallocation.</remarks>
    public bool ReserveSpace(long offset, long length)
    {
        if (length <= 0 || !OperatingSystem.IsLinux()) return false;
        if (FAllocate((int)_handle.DangerousGetHandle(), FallocFlKeepSize, offset, length) == 0) return true;
        int errno = Marshal.GetLastPInvokeError();
        if (errno is Eopnotsupp or Enosys) return false;
        if (errno is Enospc or Edquot)
            throw new Qcow2NoSpaceException($"no space left on the device of {Name} to reserve {length} bytes at {offset}");
        throw new IOException($"reserving {length} bytes at {offset} in {Name} failed: errno {errno}", errno);
    }

    /// <inheritdoc />
    public void Dispose() => _handle.Dispose();

    private const int FallocFlKeepSize = 0x01, FallocFlPunchHole = 0x02;
    private const int Enospc = 28, Enosys = 38, Eopnotsupp = 95, Edquot = 122;

    [LibraryImport("libc", EntryPoint = "fdatasync", SetLastError = true)]
    private static partial int FdDataSync(int fd);

    [LibraryImport("libc", EntryPoint = "fallocate", SetLastError = true)]
    private static partial int FAllocate(int fd, int mode, long offset, long length);
}
