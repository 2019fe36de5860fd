using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Device;

/// <summary>
/// <see cref="HostFileCalls.WillNeed"/> puts the whole range it is given in the page cache, not just the first piece
/// the kernel reads per call. Counted with cachestat(2) (Linux 6.5+) on a file of a disk filesystem, whose pages,
/// unlike tmpfs's, can be dropped first.
/// </summary>
public sealed partial class HostFileCallsTests : DirectIoFileFixture
{
    private const int PosixFadvDontNeed = 4;
    private const int SysCachestat = 451; // x86_64 and the generic table (arm64) alike

    [StructLayout(LayoutKind.Sequential)]
    private struct CacheStatRange { public ulong Offset, Length; }

    [StructLayout(LayoutKind.Sequential)]
    private struct CacheStat { public ulong Cached, Dirty, Writeback, Evicted, RecentlyEvicted; }

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long CacheStatCall(long number, int fd, ref CacheStatRange range, out CacheStat stat, uint flags);

    [LibraryImport("libc", EntryPoint = "posix_fadvise")]
    private static partial int FAdvise(int fd, long offset, long length, int advice);

    private static long CachedPages(SafeFileHandle handle, long length)
    {
        var range = new CacheStatRange { Offset = 0, Length = (ulong)length };
        if (CacheStatCall(SysCachestat, (int)handle.DangerousGetHandle(), ref range, out var stat, 0) != 0)
            throw new InvalidOperationException($"cachestat failed: errno {Marshal.GetLastPInvokeError()} (needs Linux 6.5)");
        return (long)stat.Cached;
    }

    [DirectIoFact]
    public void A_hint_for_32_MiB_puts_all_32_MiB_in_the_page_cache()
    {
        const int Length = 32 * 1024 * 1024; // past any one call's cap (here 8 MiB, elsewhere as little as the largest disk I/O)
        var path = NewFile(Length);
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
        RandomAccess.FlushToDisk(handle);
        Assert.Equal(0, FAdvise((int)handle.DangerousGetHandle(), 0, Length, PosixFadvDontNeed));
        Assert.True(CachedPages(handle, Length) < 64, "the file's pages were not dropped: nothing to measure");

        HostFileCalls.WillNeed(handle, 0, Length);

        // Pages under read count as cached as soon as the kernel adds them, before the disk answers.
        Assert.Equal(Length / Environment.SystemPageSize, CachedPages(handle, Length));
    }
}
