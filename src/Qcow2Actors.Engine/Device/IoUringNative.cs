using System.Runtime.InteropServices;

namespace Qcow2Actors.Engine.Device;

/// <summary>
/// The Linux io_uring ABI as <see cref="IoUringReadRing"/> uses it: the two system calls, the blittable
/// structures the kernel shares with us (layouts from include/uapi/linux/io_uring.h, fixed since 5.1
/// and the same on every 64-bit architecture), eventfd, and mmap. No io_uring package is available,
/// and liburing is not installed everywhere, so the calls go through libc's <c>syscall</c>.
/// </summary>
internal static unsafe partial class IoUringNative
{
    // io_uring_setup and io_uring_enter have the same numbers on every architecture (the unified
    // syscall table, added in 5.1).
    private const long SysIoUringSetup = 425, SysIoUringEnter = 426;

    /// <summary>IORING_SETUP_SINGLE_ISSUER (6.0): only the creating thread submits; lets the kernel skip locking.</summary>
    public const uint SetupSingleIssuer = 1u << 12;

    /// <summary>
    /// IORING_SETUP_DEFER_TASKRUN (6.1): completion work runs when the ring's thread asks for events, not by
    /// interrupting whichever thread submitted. Needs <see cref="SetupSingleIssuer"/>.
    /// </summary>
    public const uint SetupDeferTaskrun = 1u << 13;

    /// <summary>IORING_ENTER_GETEVENTS: wait for (and, with deferred task work, run) completions.</summary>
    public const uint EnterGetEvents = 1;

    /// <summary>IORING_OP_READ (5.6): pread into one buffer.</summary>
    public const byte OpRead = 22;

    /// <summary>mmap offsets of the submission ring, the completion ring and the submission entries.</summary>
    public const long OffSqRing = 0, OffCqRing = 0x8000000, OffSqes = 0x10000000;

    private const int ProtRead = 1, ProtWrite = 2, MapShared = 1, MapPopulate = 0x8000;
    private const int EfdCloexec = 0x80000;

    public const int Eintr = 4, Eagain = 11, Ebusy = 16;

    [StructLayout(LayoutKind.Sequential)]
    public struct SqRingOffsets
    {
        public uint Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1;
        public ulong UserAddr;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct CqRingOffsets
    {
        public uint Head, Tail, RingMask, RingEntries, Overflow, Cqes, Flags, Resv1;
        public ulong UserAddr;
    }

    /// <summary>struct io_uring_params (120 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Params
    {
        public uint SqEntries, CqEntries, Flags, SqThreadCpu, SqThreadIdle, Features, WqFd;
        public uint Resv0, Resv1, Resv2;
        public SqRingOffsets SqOff;
        public CqRingOffsets CqOff;
    }

    /// <summary>struct io_uring_sqe (64 bytes), only the fields a read uses.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 64)]
    public struct Sqe
    {
        [FieldOffset(0)] public byte Opcode;
        [FieldOffset(1)] public byte Flags;
        [FieldOffset(2)] public ushort IoPrio;
        [FieldOffset(4)] public int Fd;
        [FieldOffset(8)] public ulong Off;
        [FieldOffset(16)] public ulong Addr;
        [FieldOffset(24)] public uint Len;
        [FieldOffset(28)] public uint RwFlags;
        [FieldOffset(32)] public ulong UserData;
        [FieldOffset(40)] public ushort BufIndex;
        [FieldOffset(42)] public ushort Personality;
        [FieldOffset(44)] public int SpliceFdIn;
        [FieldOffset(48)] public ulong Addr3;
        [FieldOffset(56)] public ulong Pad2;
    }

    /// <summary>struct io_uring_cqe (16 bytes; we never ask for the 32-byte form).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Cqe
    {
        public ulong UserData;
        public int Res;
        public uint Flags;
    }

    /// <summary>io_uring_setup; the ring's fd, or -errno.</summary>
    public static int Setup(uint entries, Params* p)
    {
        var r = Syscall(SysIoUringSetup, entries, (long)p, 0, 0, 0, 0);
        return r < 0 ? -Marshal.GetLastPInvokeError() : (int)r;
    }

    /// <summary>io_uring_enter; how many entries were consumed, or -errno.</summary>
    public static int Enter(int fd, uint toSubmit, uint minComplete, uint flags)
    {
        var r = Syscall(SysIoUringEnter, fd, toSubmit, minComplete, flags, 0, 0);
        return r < 0 ? -Marshal.GetLastPInvokeError() : (int)r;
    }

    /// <summary>Maps one region of the ring; null on failure.</summary>
    public static void* Map(int fd, nuint length, long offset)
    {
        var p = MMap(null, length, ProtRead | ProtWrite, MapShared | MapPopulate, fd, offset);
        return p == (void*)-1 ? null : p;
    }

    public static void Unmap(void* address, nuint length)
    {
        if (address is not null) _ = MUnmap(address, length);
    }

    /// <summary>A close-on-exec eventfd, or -errno.</summary>
    public static int CreateEventFd()
    {
        var fd = EventFd(0, EfdCloexec);
        return fd < 0 ? -Marshal.GetLastPInvokeError() : fd;
    }

    /// <summary>Adds one to an eventfd (wakes a read waiting on it).</summary>
    public static void Signal(int eventFd)
    {
        ulong one = 1;
        _ = Write(eventFd, &one, sizeof(ulong));
    }

    public static void CloseFd(int fd)
    {
        if (fd >= 0) _ = Close(fd);
    }

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long Syscall(long number, long a1, long a2, long a3, long a4, long a5, long a6);

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static partial void* MMap(void* address, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    private static partial int MUnmap(void* address, nuint length);

    [LibraryImport("libc", EntryPoint = "eventfd", SetLastError = true)]
    private static partial int EventFd(uint initial, int flags);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    private static partial nint Write(int fd, void* buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);
}
