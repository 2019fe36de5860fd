using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Engine.Read;

/// <summary>
/// A raw image (top or backing): guest offset = device offset. Its size is the device length rounded
/// up to 512 bytes, as QEMU counts it; bytes past the end of the device read as zeros. Block status
/// comes from the file system's holes (SEEK_DATA / SEEK_HOLE) for a host file, as with QEMU's file
/// driver, and from the device itself when it is an <see cref="IAllocationStatusDevice"/> (an NBD
/// export's <c>base:allocation</c>); any other device reports everything as data.
/// Data is read through a block device like a qcow2 image's (transient errors retried inside it,
/// the page cache used or not as the open asked); a host file's handle is kept for the hole queries.
/// </summary>
internal sealed partial class RawLayer : IImageLayer
{
    private const int SeekData = 3;
    private const int SeekHole = 4;
    private const int Enxio = 6;
    private const long Sector = 512;

    private readonly SafeFileHandle? _handle;
    private readonly IBlockDevice _device;
    private readonly IAllocationStatusDevice? _status;
    private readonly long _deviceLength;

    private RawLayer(SafeFileHandle? handle, IBlockDevice device, string fileName, long deviceLength)
    {
        _handle = handle;
        _device = device;
        _status = device as IAllocationStatusDevice;
        FileName = fileName;
        _deviceLength = deviceLength;
        Size = (deviceLength + Sector - 1) & ~(Sector - 1);
    }

    /// <summary>A raw host file: holes found with SEEK_DATA / SEEK_HOLE.</summary>
    public static RawLayer Open(string path, string fileName, CacheMode cache = CacheMode.Writeback)
    {
        var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, FileOptions.RandomAccess);
        try
        {
            return new(handle, ResilientBlockDevice.OpenFile(path, writable: false, cache), fileName, RandomAccess.GetLength(handle));
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>A raw image on a device that is not a host file (no handle, no stat); the layer owns the device.</summary>
    public static RawLayer Over(IBlockDevice device, string fileName) => new(null, device, fileName, device.Length);

    public string FileName { get; }
    public string Format => "raw";
    public long Size { get; }
    public IImageLayer? Backing => null;

    public async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        // Never ask the device for bytes past its end (an NBD server answers that with an error):
        // the tail up to the sector-rounded size reads as zeros.
        int want = (int)Math.Clamp(_deviceLength - offset, 0, buffer.Length);
        int total = 0;
        while (total < want)
        {
            int n = await _device.ReadAsync(buffer[total..want], offset + total, cancellationToken).ConfigureAwait(false);
            if (n == 0) break;
            total += n;
        }
        buffer.Span[total..].Clear();
    }

    public async ValueTask<LayerStatus> GetStatusAsync(long offset, long length, CancellationToken cancellationToken)
    {
        length = Math.Min(length, Size - offset);
        if (_handle is not null) return FileStatus(_handle, offset, length);
        if (_status is null || offset >= _deviceLength)
            return new LayerStatus(length, offset < _deviceLength, offset >= _deviceLength, true, offset, FileName);
        var run = await _status.GetAllocationAsync(offset, Math.Min(length, _deviceLength - offset), cancellationToken).ConfigureAwait(false);
        if (run.Length <= 0)
            throw new IOException($"'{FileName}' reported an empty block status run at offset {offset}");
        // As QEMU's raw-over-protocol: the layer decides every byte (allocated); data unless a hole.
        return new LayerStatus(Math.Min(run.Length, length), run.Allocated, run.Zero, true, offset, FileName);
    }

    private LayerStatus FileStatus(SafeFileHandle handle, long offset, long length)
    {
        if (!OperatingSystem.IsLinux())
            return new LayerStatus(length, true, false, true, offset, FileName);
        int fd = (int)handle.DangerousGetHandle();
        long data = LSeek(fd, offset, SeekData);
        if (data < 0)
        {
            // ENXIO: only a hole remains up to the end of the file.
            bool trailingHole = Marshal.GetLastPInvokeError() == Enxio;
            return new LayerStatus(length, !trailingHole, trailingHole, true, offset, FileName);
        }
        if (data > offset)
            return new LayerStatus(Math.Min(length, data - offset), false, true, true, offset, FileName);
        long hole = LSeek(fd, offset, SeekHole);
        long run = hole > offset ? Math.Min(length, hole - offset) : length;
        return new LayerStatus(run, true, false, true, offset, FileName);
    }

    public ValueTask DisposeAsync()
    {
        _device.Dispose();
        _handle?.Dispose();
        return ValueTask.CompletedTask;
    }

    [LibraryImport("libc", EntryPoint = "lseek", SetLastError = true)]
    private static partial long LSeek(int fd, long offset, int whence);
}
