using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Engine.Snapshots;

/// <summary>
/// The image file opened read-write with no sharing, the way qemu-img opens an image it edits.
/// On Linux .NET takes <c>flock(LOCK_EX)</c> for <see cref="FileShare.None"/>, which conflicts with
/// the <c>LOCK_SH</c> every other q2a read-write open holds (<see cref="FileBlockDevice"/> shares
/// Read), so a snapshot edit never runs under a live engine. (<see cref="FileBlockDevice"/> cannot
/// open without sharing, hence this small device of our own.)
/// </summary>
internal sealed partial class ExclusiveImageFile : IBlockDevice
{
    private readonly SafeFileHandle _handle;

    private ExclusiveImageFile(SafeFileHandle handle, string path, bool readOnly)
    {
        _handle = handle;
        Name = path;
        IsReadOnly = readOnly;
    }

    /// <summary>Opens <paramref name="path"/>; a write open is exclusive, a read-only open shares with readers.</summary>
    /// <exception cref="IOException">Another process holds the image ("... being used by another process").</exception>
    public static ExclusiveImageFile Open(string path, bool writable)
    {
        var handle = writable
            ? File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.None, FileOptions.RandomAccess)
            : File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, FileOptions.RandomAccess);
        return new ExclusiveImageFile(handle, path, !writable);
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

    public void Dispose() => _handle.Dispose();

    [LibraryImport("libc", EntryPoint = "fdatasync", SetLastError = true)]
    private static partial int FdDataSync(int fd);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int FSync(int fd);
}
