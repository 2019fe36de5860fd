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
internal sealed class ExclusiveImageFile : BlockDevice
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

    public override string Name { get; }

    public override bool IsReadOnly { get; }

    public override long Length => RandomAccess.GetLength(_handle);

    protected override ValueTask<int> ReadCoreAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken) =>
        new(HostFileCalls.ReadFully(_handle, buffer.Span, offset));

    protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        RandomAccess.Write(_handle, buffer.Span, offset);
        return ValueTask.CompletedTask;
    }

    // A failed sync is final: the caller must not retry (the kernel may have dropped the pages).
    protected override ValueTask FlushCoreAsync(CancellationToken cancellationToken)
    {
        if (!IsReadOnly) HostFileCalls.Sync(_handle, Name);
        return ValueTask.CompletedTask;
    }

    public override void SetLength(long length) => RandomAccess.SetLength(_handle, length);

    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (!disposing) return;
        _handle.Dispose();
        _lock.Dispose();
    }
}
