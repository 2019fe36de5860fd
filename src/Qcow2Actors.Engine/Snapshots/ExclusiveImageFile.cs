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
    // The file I/O is the plain file device's; this type only adds the lock's lifetime.
    private readonly FileBlockDevice _file;
    private readonly ImageLock _lock;

    private ExclusiveImageFile(FileBlockDevice file, ImageLock imageLock)
    {
        _file = file;
        _lock = imageLock;
    }

    /// <summary>Opens <paramref name="path"/>; a write open takes the write lock, a read-only open the shared read lock.</summary>
    /// <exception cref="ImageLockException">Another process holds the image ("Failed to get "write" lock").</exception>
    public static ExclusiveImageFile Open(string path, bool writable, bool forceShare = false)
    {
        var imageLock = ImageLock.Acquire(path, writable ? LockMode.Writer : forceShare ? LockMode.ForceShareReader : LockMode.Reader);
        try
        {
            return new ExclusiveImageFile(FileBlockDevice.Open(path, writable), imageLock);
        }
        catch
        {
            imageLock.Dispose();
            throw;
        }
    }

    public override string Name => _file.Name;

    public override bool IsReadOnly => _file.IsReadOnly;

    public override long Length => _file.Length;

    protected override ValueTask<int> ReadCoreAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken) =>
        _file.ReadAsync(buffer, offset, cancellationToken);

    protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken) =>
        _file.WriteAsync(buffer, offset, cancellationToken);

    // A failed sync is final: the caller must not retry (the kernel may have dropped the pages).
    protected override ValueTask FlushCoreAsync(CancellationToken cancellationToken) => _file.FlushAsync(cancellationToken);

    public override void SetLength(long length) => _file.SetLength(length);

    public override void PunchHole(long offset, long length) => _file.PunchHole(offset, length);

    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (!disposing) return;
        _file.Dispose();
        _lock.Dispose();
    }
}
