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

    /// <summary>Opens an existing file; read-only unless <paramref name="writable"/>.</summary>
    public static FileBlockDevice Open(string path, bool writable)
    {
        var access = writable ? FileAccess.ReadWrite : FileAccess.Read;
        var share = writable ? FileShare.Read : FileShare.ReadWrite;
        var handle = File.OpenHandle(path, FileMode.Open, access, share, FileOptions.RandomAccess);
        return new FileBlockDevice(handle, path, !writable);
    }

    /// <summary>Creates a new file (failing if it exists unless <paramref name="overwrite"/>), opened read-write.</summary>
    public static FileBlockDevice Create(string path, bool overwrite = false)
    {
        var handle = File.OpenHandle(path, overwrite ? FileMode.Create : FileMode.CreateNew, FileAccess.ReadWrite,
            FileShare.Read, FileOptions.RandomAccess);
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
    public async ValueTask<int> ReadAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken = default)
    {
        var total = 0;
        while (total < buffer.Length)
        {
            var n = await RandomAccess.ReadAsync(_handle, buffer[total..], offset + total, cancellationToken).ConfigureAwait(false);
            if (n == 0) break;
            total += n;
        }
        return total;
    }

    /// <inheritdoc />
    public void Write(ReadOnlySpan<byte> buffer, long offset) => RandomAccess.Write(_handle, buffer, offset);

    /// <inheritdoc />
    public ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken = default) =>
        RandomAccess.WriteAsync(_handle, buffer, offset, cancellationToken);

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
    public void Dispose() => _handle.Dispose();

    [LibraryImport("libc", EntryPoint = "fdatasync", SetLastError = true)]
    private static partial int FdDataSync(int fd);
}
