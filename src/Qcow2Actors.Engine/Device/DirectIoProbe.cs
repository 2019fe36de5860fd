using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Qcow2Actors.Engine.Device;

/// <summary>
/// Turns O_DIRECT on for an open file and finds what it demands: the logical sector size every
/// offset, length and memory address must be a multiple of.
/// A block device reports its sector size (BLKSSZGET); for a file the sizes are tried from 512 up
/// with a direct read at offset 0, and the first one the kernel does not refuse with EINVAL wins.
/// </summary>
internal static partial class DirectIoProbe
{
    private const int FGetFl = 3, FSetFl = 4, ODirect = 0x4000;
    private const nuint BlkSszGet = 0x1268; // _IO(0x12, 104)

    /// <summary>What O_DIRECT demands of requests on one file.</summary>
    public readonly record struct Alignment(int SectorSize, int MemoryAlignment);

    /// <summary>The error for a filesystem that refuses O_DIRECT: names the path and the way out.</summary>
    public static DirectIoRefusedException Refused(string path, string why) =>
        new($"{path}: cache=none needs O_DIRECT, which this filesystem refuses ({why}); use cache=writeback");

    /// <summary>Sets O_DIRECT on <paramref name="handle"/> (Linux only) or throws <see cref="Refused"/>.</summary>
    public static void Enable(SafeFileHandle handle, string path)
    {
        if (!OperatingSystem.IsLinux())
            throw new PlatformNotSupportedException($"{path}: cache=none (O_DIRECT) is supported on Linux only; use cache=writeback");
        int fd = (int)handle.DangerousGetHandle();
        int flags = Fcntl(fd, FGetFl, 0);
        if (flags < 0 || Fcntl(fd, FSetFl, flags | ODirect) < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (errno == HostFileCalls.Einval) throw Refused(path, "EINVAL");
            throw new IOException($"{path}: turning on O_DIRECT failed: errno {errno}", errno);
        }
    }

    /// <summary>Finds the sector size and memory alignment of a handle that has O_DIRECT on.</summary>
    public static Alignment Probe(SafeFileHandle handle, string path)
    {
        using var lease = AlignedBufferPool.Rent(2 * AlignedBufferPool.Alignment);
        var buffer = lease.Span;
        int sector = 0;
        bool conclusive = false;
        if (Ioctl((int)handle.DangerousGetHandle(), BlkSszGet, out int logical) == 0 && logical > 0)
        {
            sector = logical;
            conclusive = TryRead(handle, buffer[..sector], out int n) && n == sector;
        }
        else
        {
            for (int size = 512; size <= AlignedBufferPool.Alignment; size <<= 1)
            {
                if (!TryRead(handle, buffer[..size], out int n)) continue;
                // A file shorter than the probe cannot tell 512 from 4096: 4096 suits both.
                conclusive = n == size;
                sector = conclusive ? size : AlignedBufferPool.Alignment;
                break;
            }
        }
        if (sector == 0) throw Refused(path, "every direct read from 512 to 4096 bytes failed with EINVAL");
        if (sector > AlignedBufferPool.Alignment)
            throw new DirectIoRefusedException($"{path}: logical sector size {sector} is larger than {AlignedBufferPool.Alignment}; use cache=writeback");
        // Memory: sector-aligned. A smaller address alignment passes a probe within one page but not a
        // transfer that crosses pages, whose pieces then stop being whole sectors (EINVAL).
        return new Alignment(sector, conclusive ? sector : AlignedBufferPool.Alignment);
    }

    private static bool TryRead(SafeFileHandle handle, Span<byte> buffer, out int read)
    {
        try
        {
            read = RandomAccess.Read(handle, buffer, 0);
            return true;
        }
        catch (IOException e) when (e.HResult == HostFileCalls.Einval)
        {
            read = 0;
            return false;
        }
    }

    [LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    private static partial int Fcntl(int fd, int cmd, int arg);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int Ioctl(int fd, nuint request, out int value);
}
