using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Qcow2Actors.Engine.Device;

/// <summary>
/// The system calls the host-file devices share (<see cref="FileBlockDevice"/>,
/// <see cref="DirectFileBlockDevice"/>): fdatasync, hole punching, space reservation, non-blocking reads and
/// second handles on an open file.
/// </summary>
internal static partial class HostFileCalls
{
    private const int FallocFlKeepSize = 0x01, FallocFlPunchHole = 0x02;
    internal const int Einval = 22, Enospc = 28, Enosys = 38, Eopnotsupp = 95, Edquot = 122;

    /// <summary>fdatasync on Linux; elsewhere the OS's flush-to-disk on the same handle, which stays open.</summary>
    public static void Sync(SafeFileHandle handle, string name)
    {
        if (OperatingSystem.IsLinux())
        {
            if (FdDataSync((int)handle.DangerousGetHandle()) != 0)
                throw new IOException($"fdatasync failed on {name}: errno {Marshal.GetLastPInvokeError()}");
            return;
        }
        // Not a FileStream over the handle: disposing one closes the handle it wraps, and keeping
        // one undisposed would close it from the finalizer. RandomAccess flushes the handle as it is.
        RandomAccess.FlushToDisk(handle);
    }

    /// <summary>
    /// fallocate(PUNCH_HOLE|KEEP_SIZE) on Linux; false where the filesystem or OS cannot punch holes
    /// (EOPNOTSUPP, ENOSYS), so the caller writes zeros instead.
    /// </summary>
    public static bool TryPunchHole(SafeFileHandle handle, string name, long offset, long length)
    {
        if (!OperatingSystem.IsLinux()) return false;
        if (FAllocate((int)handle.DangerousGetHandle(), FallocFlPunchHole | FallocFlKeepSize, offset, length) == 0) return true;
        int errno = Marshal.GetLastPInvokeError();
        if (errno is Eopnotsupp or Enosys) return false;
        throw new IOException($"punching a hole at {offset} (+{length}) in {name} failed: errno {errno}", errno);
    }

    /// <summary>fallocate(KEEP_SIZE) on Linux; false where the filesystem or OS has no preallocation.</summary>
    public static bool ReserveSpace(SafeFileHandle handle, string name, long offset, long length)
    {
        if (length <= 0 || !OperatingSystem.IsLinux()) return false;
        if (FAllocate((int)handle.DangerousGetHandle(), FallocFlKeepSize, offset, length) == 0) return true;
        int errno = Marshal.GetLastPInvokeError();
        if (errno is Eopnotsupp or Enosys) return false;
        if (errno is Enospc or Edquot)
            throw new Qcow2NoSpaceException($"no space left on the device of {name} to reserve {length} bytes at {offset}");
        throw new IOException($"reserving {length} bytes at {offset} in {name} failed: errno {errno}", errno);
    }

    /// <summary>
    /// A second handle on the very file <paramref name="handle"/> has open (Linux: through /proc/self/fd, so a
    /// rename, unlink or replacement of the path since the first open cannot make it another file), with its
    /// own open file description: its own readahead state, fadvise hints and status flags such as O_DIRECT.
    /// Throws <see cref="PlatformNotSupportedException"/> elsewhere, and <see cref="IOException"/> or
    /// <see cref="UnauthorizedAccessException"/> where it cannot be opened; callers then do without it.
    /// </summary>
    public static SafeFileHandle Reopen(SafeFileHandle handle, FileAccess access, FileOptions options)
    {
        // Reopening by path would follow whatever the name points to now: a replaced image would take our writes.
        if (!OperatingSystem.IsLinux()) throw new PlatformNotSupportedException("reopening an open file needs /proc/self/fd");
        var link = $"/proc/self/fd/{handle.DangerousGetHandle()}";
        return File.OpenHandle(link, FileMode.Open, access, FileShare.ReadWrite, options);
    }

    private const int PosixFadvWillNeed = 3;

    /// <summary>Largest range one WILLNEED asks for: the kernel reads only so much per call (8 MiB on this project's
    /// test machine, as little as the disk's largest I/O elsewhere) and drops the rest of the hint.</summary>
    private const long WillNeedPiece = 1024 * 1024;

    /// <summary>
    /// posix_fadvise(WILLNEED) on Linux: starts reading the range into the page cache and returns without waiting
    /// for it. A hint: failures (a closed handle too) are ignored, and elsewhere it does nothing.
    /// </summary>
    public static void WillNeed(SafeFileHandle handle, long offset, long length)
    {
        if (!OperatingSystem.IsLinux() || length <= 0) return;
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            int fd = (int)handle.DangerousGetHandle();
            // In pieces, or the kernel would read only the first part of a long hint (force_page_cache_ra caps it).
            for (long done = 0; done < length; done += WillNeedPiece)
                _ = FAdvise(fd, offset + done, Math.Min(WillNeedPiece, length - done), PosixFadvWillNeed);
        }
        catch (ObjectDisposedException)
        {
            // closed under us: nothing to warm
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
    }

    /// <summary>Reads until <paramref name="buffer"/> is full or the file ends.</summary>
    public static int ReadFully(SafeFileHandle handle, Span<byte> buffer, long offset)
    {
        var total = 0;
        while (total < buffer.Length)
        {
            var n = RandomAccess.Read(handle, buffer[total..], offset + total);
            if (n == 0) break;
            total += n;
        }
        return total;
    }

    private const int RwfNowait = 0x08;

    // Cleared the first time the kernel or filesystem refuses RWF_NOWAIT on buffered reads (pre-4.14
    // kernels, some filesystems): from then on every read goes the ordinary, possibly blocking way.
    private static volatile bool s_noWaitReads = OperatingSystem.IsLinux();

    /// <summary>
    /// preadv2(RWF_NOWAIT) on Linux: true when all of <paramref name="buffer"/> came from the page cache
    /// without waiting; false when it would block (EAGAIN), came back short, failed, or the system has no
    /// such read. Never blocks on the disk.
    /// </summary>
    public static unsafe bool TryReadNoWait(SafeFileHandle handle, Span<byte> buffer, long offset)
    {
        if (!s_noWaitReads || buffer.IsEmpty) return false;
        nint n;
        int errno = 0;
        bool added = false;
        try
        {
            // A reference for the call: a handle closed concurrently must not leave its number to another file.
            handle.DangerousAddRef(ref added);
            fixed (byte* p = buffer)
            {
                var iov = new IoVec { Base = p, Length = (nuint)buffer.Length };
                n = PReadV2((int)handle.DangerousGetHandle(), &iov, 1, offset, RwfNowait);
            }
            if (n < 0) errno = Marshal.GetLastPInvokeError(); // before the release, whose close could overwrite it
        }
        catch (ObjectDisposedException)
        {
            return false; // closed: the ordinary read reports it
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
        if (n == buffer.Length) return true;
        // EAGAIN (would wait) and real errors alike go to the ordinary read, which waits or reports them.
        if (errno is Eopnotsupp or Enosys or Einval) s_noWaitReads = false;
        return false;
    }

    // Cleared the first time the kernel refuses cachestat (before Linux 6.5, or a seccomp filter).
    private static volatile bool s_cacheStat = OperatingSystem.IsLinux();

    /// <summary>Whether <see cref="IsCached"/> can answer here.</summary>
    public static bool CanTellCached => s_cacheStat;

    /// <summary>
    /// cachestat(2): true when every page of [<paramref name="offset"/>, + <paramref name="length"/>) is in the
    /// page cache. False when one is not, the call fails, or the system has no such call. Never waits for the disk.
    /// </summary>
    public static unsafe bool IsCached(SafeFileHandle handle, long offset, long length)
    {
        if (!s_cacheStat || length <= 0) return false;
        var range = new CacheStatRange { Offset = (ulong)offset, Length = (ulong)length };
        CacheStat stat = default;
        nint r;
        int errno = 0;
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            r = Syscall(SysCacheStat, (int)handle.DangerousGetHandle(), &range, &stat, 0);
            if (r != 0) errno = Marshal.GetLastPInvokeError();
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
        if (r != 0)
        {
            if (errno is Enosys or Eperm) s_cacheStat = false;
            return false;
        }
        long page = Environment.SystemPageSize;
        long pages = (offset + length - 1) / page - offset / page + 1;
        return (long)stat.Cached >= pages;
    }

    /// <summary>
    /// Reads the one byte at <paramref name="offset"/>, waiting for the disk if it must: a read of that page
    /// already under way (readahead) is waited for, and a page nobody asked for is read alone. False when the
    /// file ends before it or the read fails (the ordinary read meets the error again and reports it).
    /// </summary>
    public static bool TouchByte(SafeFileHandle handle, long offset)
    {
        Span<byte> one = stackalloc byte[1];
        try
        {
            return RandomAccess.Read(handle, one, offset) == 1;
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    // The same number on every Linux architecture (it came after the tables were unified).
    private const nint SysCacheStat = 451;
    private const int Eperm = 1;

    private struct CacheStatRange
    {
        public ulong Offset;
        public ulong Length;
    }

    private struct CacheStat
    {
        public ulong Cached;
        public ulong Dirty;
        public ulong Writeback;
        public ulong Evicted;
        public ulong RecentlyEvicted;
    }

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static unsafe partial nint Syscall(nint number, int fd, CacheStatRange* range, CacheStat* stat, uint flags);

    private unsafe struct IoVec
    {
        public byte* Base;
        public nuint Length;
    }

    [LibraryImport("libc", EntryPoint = "preadv2", SetLastError = true)]
    private static unsafe partial nint PReadV2(int fd, IoVec* iov, int iovcnt, long offset, int flags);

    [LibraryImport("libc", EntryPoint = "posix_fadvise")]
    private static partial int FAdvise(int fd, long offset, long length, int advice);

    [LibraryImport("libc", EntryPoint = "fdatasync", SetLastError = true)]
    private static partial int FdDataSync(int fd);

    [LibraryImport("libc", EntryPoint = "fallocate", SetLastError = true)]
    private static partial int FAllocate(int fd, int mode, long offset, long length);
}
