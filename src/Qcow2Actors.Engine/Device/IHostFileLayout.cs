using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Qcow2Actors.Engine.Device;

/// <summary>
/// A device that is a host file and can say how the file system lays it out: how much it occupies and
/// where its holes are. The qcow2 read side asks it, as QEMU's file driver is asked, when an image
/// looks metadata-preallocated (data clusters the file system never stored read as zeros).
/// </summary>
internal interface IHostFileLayout
{
    /// <summary>Bytes the file occupies on its file system (st_blocks × 512), or -1 when unknown.</summary>
    long AllocatedBytes { get; }

    /// <summary>
    /// The run of data or hole that starts at <paramref name="offset"/>, at most <paramref name="length"/>
    /// bytes and never past the end of the file; null when the file system cannot say.
    /// </summary>
    HostFileRun? GetRun(long offset, long length);
}

/// <summary>One run of <see cref="IHostFileLayout.GetRun"/>.</summary>
/// <param name="Length">Bytes in the run (0 when the offset is at or past the end of the file).</param>
/// <param name="Hole">The run is a hole (reads as zeros).</param>
/// <param name="EndOfFile">The run ends at the end of the file.</param>
internal readonly record struct HostFileRun(long Length, bool Hole, bool EndOfFile);

/// <summary>SEEK_DATA / SEEK_HOLE and statx for <see cref="IHostFileLayout"/> implementations.</summary>
internal static partial class HostFileHoles
{
    private const int SeekData = 3, SeekHole = 4, Enxio = 6;
    private const int AtEmptyPath = 0x1000;
    private const uint StatxBlocks = 0x400;
    // struct statx is the same on every architecture: 256 bytes, stx_blocks (512-byte units) at byte 48.
    private const int StatxSize = 256, StatxBlocksOffset = 48, StatxMaskOffset = 0;

    /// <summary>The device's layout, looking through the wrappers that forward it; null for any other device.</summary>
    public static IHostFileLayout? Of(IBlockDevice device) => device switch
    {
        ResilientBlockDevice r => Of(r.Inner),
        IHostFileLayout layout => layout,
        _ => null,
    };

    /// <summary>st_blocks × 512 of the open file, or -1 (not Linux, or statx failed).</summary>
    public static unsafe long AllocatedBytes(SafeFileHandle handle)
    {
        if (!OperatingSystem.IsLinux()) return -1;
        byte* buffer = stackalloc byte[StatxSize];
        byte empty = 0;
        if (Statx((int)handle.DangerousGetHandle(), &empty, AtEmptyPath, StatxBlocks, buffer) != 0) return -1;
        if ((*(uint*)(buffer + StatxMaskOffset) & StatxBlocks) == 0) return -1;
        return (long)(*(ulong*)(buffer + StatxBlocksOffset) * 512);
    }

    /// <summary>The data or hole run at <paramref name="offset"/> of a file <paramref name="fileLength"/> bytes long.</summary>
    public static HostFileRun? GetRun(SafeFileHandle handle, long fileLength, long offset, long length)
    {
        if (offset >= fileLength) return new HostFileRun(0, true, true);
        length = Math.Min(length, fileLength - offset);
        if (!OperatingSystem.IsLinux()) return null;
        int fd = (int)handle.DangerousGetHandle();
        long data = LSeek(fd, offset, SeekData);
        if (data < 0)
        {
            // ENXIO: nothing but a hole from here to the end; any other failure: no answer.
            if (Marshal.GetLastPInvokeError() != Enxio) return null;
            return new HostFileRun(length, true, offset + length == fileLength);
        }
        long run;
        bool hole;
        if (data > offset)
        {
            run = Math.Min(length, data - offset);
            hole = true;
        }
        else
        {
            long next = LSeek(fd, offset, SeekHole);
            if (next < 0) return null;
            run = next > offset ? Math.Min(length, next - offset) : length;
            hole = false;
        }
        return new HostFileRun(run, hole, offset + run == fileLength);
    }

    [LibraryImport("libc", EntryPoint = "lseek", SetLastError = true)]
    private static partial long LSeek(int fd, long offset, int whence);

    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true)]
    private static unsafe partial int Statx(int dirfd, byte* path, int flags, uint mask, byte* buffer);
}
