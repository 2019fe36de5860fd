using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Engine.Snapshots;

/// <summary>
/// The image file opened for a snapshot edit (or list) under QEMU's image lock, the way qemu-img
/// snapshot opens it: an edit takes the "write" lock, so it never runs while q2a serve, qemu-nbd
/// or qemu-io hold the image, and a list takes the shared read lock. The lock lives on its own
/// handle (<see cref="ImageLock"/>); the data handle is opened sharing everything, so .NET's
/// flock plays no part in who may open the image.
/// </summary>
internal sealed partial class ExclusiveImageFile : IBlockDevice
{
    private readonly SafeFileHandle _handle;
    private readonly ImageLock _lock;

    private ExclusiveImageFile(SafeFileHandle handle, ImageLock imageLock, string path, bool readOnly)
    {
        _handle = handle;
        _lock = imageLock;
        Name = path;
        IsReadOnly = readOnly;
    }

    /// <summary>Opens <paramref name="path"/>; a write open takes the write lock, a read-only open the shared read lock.</summary>
    /// <exception cref="ImageLockException">Another process holds the image ("Failed to get "write" lock").</exception>
    public static ExclusiveImageFile Open(string path, bool writable, bool forceShare = false)
    {
        var imageLock = ImageLock.Acquire(path, writable ? LockMode.Writer : forceShare ? LockMode.ForceShareReader : LockMode.Reader);
        try
        {
            var handle = File.OpenHandle(path, FileMode.Open, writable ? FileAccess.ReadWrite : FileAccess.Read,
                FileShare.ReadWrite, FileOptions.RandomAccess);
            return new ExclusiveImageFile(handle, imageLock, path, !writable);
        }
        catch
        {
            imageLock.Dispose();
            throw;
        }
    }

    public string Name { get; }

    public bool IsReadOnly { get; }

    public long Length => RandomAccess.GetLength(_handle);

    public int Read(Span<byte> buffer, long offset)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int n = RandomAccess.Read(_handle, buffer[total..], offset + total);
            if (n == 0) break;
            total += n;
        }
        return total;
    }

    public ValueTask<int> ReadAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Read(buffer.Span, offset));

    public void Write(ReadOnlySpan<byte> buffer, long offset) => RandomAccess.Write(_handle, buffer, offset);

    public ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken = default)
    {
        Write(buffer.Span, offset);
        return ValueTask.CompletedTask;
    }

    public void Flush()
    {
        if (IsReadOnly) return;
        int fd = (int)_handle.DangerousGetHandle();
        // A failed sync is final: the caller must not retry (the kernel may have dropped the pages).
        if ((OperatingSystem.IsLinux() ? FdDataSync(fd) : FSync(fd)) != 0)
            throw new IOException($"sync failed on {Name}: errno {Marshal.GetLastPInvokeError()}");
    }

    public void SetLength(long length) => RandomAccess.SetLength(_handle, length);

    public void Dispose()
    {
        _handle.Dispose();
        _lock.Dispose();
    }

    [LibraryImport("libc", EntryPoint = "fdatasync", SetLastError = true)]
    private static partial int FdDataSync(int fd);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int FSync(int fd);
}
