using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Engine.Read;

/// <summary>
/// A raw image (top or backing): guest offset = file offset. Its size is the file length rounded
/// up to 512 bytes, as QEMU counts it; bytes past the end of the file read as zeros. Block status
/// comes from the file system's holes (SEEK_DATA / SEEK_HOLE), as with QEMU's file driver.
/// Data is read through a block device like a qcow2 image's (transient errors retried inside it,
/// the page cache used or not as the open asked); the handle is kept for the hole queries.
/// </summary>
internal sealed partial class RawLayer : IImageLayer
{
    private const int SeekData = 3;
    private const int SeekHole = 4;
    private const int Enxio = 6;

    private readonly SafeFileHandle _handle;
    private readonly IBlockDevice _device;

    private RawLayer(SafeFileHandle handle, IBlockDevice device, string fileName, IImageLayer? backing)
    {
        _handle = handle;
        _device = device;
        FileName = fileName;
        Backing = backing;
        long length = RandomAccess.GetLength(handle);
        Size = (length + 511) & ~511L;
    }

    public static RawLayer Open(string path, string fileName, CacheMode cache = CacheMode.Writeback)
    {
        var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, FileOptions.RandomAccess);
        try
        {
            return new(handle, ResilientBlockDevice.OpenFile(path, writable: false, cache), fileName, null);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    public string FileName { get; }
    public string Format => "raw";
    public long Size { get; }
    public IImageLayer? Backing { get; }

    public async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int n = await _device.ReadAsync(buffer[total..], offset + total, cancellationToken).ConfigureAwait(false);
            if (n == 0) break;
            total += n;
        }
        buffer.Span[total..].Clear();
    }

    public ValueTask<LayerStatus> GetStatusAsync(long offset, long length, CancellationToken cancellationToken)
    {
        length = Math.Min(length, Size - offset);
        if (!OperatingSystem.IsLinux())
            return new(new LayerStatus(length, true, false, true, offset, FileName));
        int fd = (int)_handle.DangerousGetHandle();
        long data = LSeek(fd, offset, SeekData);
        if (data < 0)
        {
            // ENXIO: only a hole remains up to the end of the file.
            bool trailingHole = Marshal.GetLastPInvokeError() == Enxio;
            return new(new LayerStatus(length, !trailingHole, trailingHole, true, offset, FileName));
        }
        if (data > offset)
            return new(new LayerStatus(Math.Min(length, data - offset), false, true, true, offset, FileName));
        long hole = LSeek(fd, offset, SeekHole);
        long run = hole > offset ? Math.Min(length, hole - offset) : length;
        return new(new LayerStatus(run, true, false, true, offset, FileName));
    }

    public ValueTask DisposeAsync()
    {
        _device.Dispose();
        _handle.Dispose();
        return ValueTask.CompletedTask;
    }

    [LibraryImport("libc", EntryPoint = "lseek", SetLastError = true)]
    private static partial long LSeek(int fd, long offset, int whence);
}
