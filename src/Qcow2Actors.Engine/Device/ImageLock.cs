using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Qcow2Actors.Engine.Device;

/// <summary>What an open does with a file, in QEMU's block-layer permission terms (one bit per permission).</summary>
[Flags]
public enum ImagePermissions
{
    /// <summary>Nothing.</summary>
    None = 0,
    /// <summary>Reads see consistent data ("consistent read").</summary>
    ConsistentRead = 1,
    /// <summary>Guest-visible writes ("write").</summary>
    Write = 2,
    /// <summary>Writes that do not change what reads return ("write unchanged").</summary>
    WriteUnchanged = 4,
    /// <summary>Changing the file's length ("resize").</summary>
    Resize = 8,
    /// <summary>Every permission QEMU 7.2 knows.</summary>
    All = ConsistentRead | Write | WriteUnchanged | Resize,
}

/// <summary>
/// One open's claim on a file: the permissions it holds and those it lets other opens hold.
/// The presets are the ones QEMU 7.2 takes (checked against /proc/locks with qemu-nbd and qemu-io).
/// </summary>
/// <param name="Held">Permissions this open uses.</param>
/// <param name="Shared">Permissions other opens may hold meanwhile.</param>
public readonly record struct LockMode(ImagePermissions Held, ImagePermissions Shared)
{
    /// <summary>A read-write image (qemu-nbd, qemu-io): reads, writes, resizes; lets nobody else write or resize.</summary>
    public static LockMode Writer { get; } = new(ImagePermissions.ConsistentRead | ImagePermissions.Write | ImagePermissions.Resize,
        ImagePermissions.ConsistentRead | ImagePermissions.WriteUnchanged);

    /// <summary>A read-only image or a backing file: reads; lets nobody write or resize it underneath.</summary>
    public static LockMode Reader { get; } = new(ImagePermissions.ConsistentRead,
        ImagePermissions.ConsistentRead | ImagePermissions.WriteUnchanged);

    /// <summary>A read-only open with <c>-U</c> (force-share): reads and lets everybody do anything.</summary>
    public static LockMode ForceShareReader { get; } = new(ImagePermissions.ConsistentRead, ImagePermissions.All);

    /// <summary>The external data file of a read-write image: like <see cref="Writer"/>, but others may write (not resize).</summary>
    public static LockMode DataFileWriter { get; } = new(ImagePermissions.ConsistentRead | ImagePermissions.Write | ImagePermissions.Resize,
        ImagePermissions.All & ~ImagePermissions.Resize);

    /// <summary>The external data file of a read-only image: reads; lets nobody resize it.</summary>
    public static LockMode DataFileReader { get; } = new(ImagePermissions.ConsistentRead, ImagePermissions.All & ~ImagePermissions.Resize);

    /// <summary>Replacing a file (qemu-img create): writes and resizes; lets nobody else resize.</summary>
    public static LockMode Creator { get; } = new(ImagePermissions.Write | ImagePermissions.Resize, ImagePermissions.All & ~ImagePermissions.Resize);
}

/// <summary>
/// QEMU's image lock protocol on one file: open-file-description byte-range locks
/// (<c>fcntl F_OFD_SETLK</c>), one shared lock on byte <see cref="PermissionBase"/>+i for each
/// permission bit i held and one on byte <see cref="UnsharedBase"/>+i for each bit not shared;
/// an open is refused when someone else holds byte 200+i for a bit it holds, or byte 100+i for
/// a bit it does not share. So q2a and QEMU's tools (qemu-nbd, qemu-io, qemu-img) see each
/// other's opens. The lock lives on a handle of its own, opened here and closed by
/// <see cref="Dispose"/>: OFD locks of two handles conflict even within one process, so every
/// other handle the engine opens on the file takes no lock, and one open image holds exactly
/// one <see cref="ImageLock"/> per file. On systems without OFD locks this is a no-op.
/// </summary>
public sealed partial class ImageLock : IDisposable
{
    /// <summary>First byte of the "permission held" range (byte 100 + bit number).</summary>
    public const int PermissionBase = 100;

    /// <summary>First byte of the "permission not shared" range (byte 200 + bit number).</summary>
    public const int UnsharedBase = 200;

    /// <summary>Permission bits QEMU 7.2 defines (consistent read, write, write unchanged, resize).</summary>
    public const int PermissionCount = 4;

    // Linux x86_64 and arm64 (asm-generic): fcntl commands, lock types, whence.
    private const int FOfdGetLk = 36;
    private const int FOfdSetLk = 37;
    private const short FRdLck = 0;
    private const short FWrLck = 1;
    private const short FUnLck = 2;
    private const short SeekSet = 0;
    private const int EInval = 22;
    private const int ENoLck = 37;
    private const int ENoSys = 38;

    private static readonly string[] PermissionNames = ["consistent read", "write", "write unchanged", "resize"];

    private readonly SafeFileHandle _handle;

    private ImageLock(SafeFileHandle handle, string path, LockMode mode)
    {
        _handle = handle;
        Path = path;
        Mode = mode;
    }

    /// <summary>The file locked.</summary>
    public string Path { get; }

    /// <summary>What this lock claims.</summary>
    public LockMode Mode { get; }

    /// <summary>
    /// Takes <paramref name="mode"/>'s locks on <paramref name="path"/> through a new handle and checks
    /// that no other open conflicts (first setting, then testing, as QEMU does, so two racing opens
    /// cannot both pass). <paramref name="displayName"/> names the image in the error.
    /// </summary>
    /// <exception cref="ImageLockException">Another open holds a conflicting permission (named).</exception>
    public static ImageLock Acquire(string path, LockMode mode, string? displayName = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        if (!OperatingSystem.IsLinux()) return new ImageLock(handle, path, mode);
        try
        {
            if (!Apply(handle, mode)) return new ImageLock(handle, path, mode);
            if (Conflict(handle, mode) is { } failure)
                throw new ImageLockException(displayName ?? path, failure);
            return new ImageLock(handle, path, mode);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The conflict another open on <paramref name="path"/> would meet if it took <paramref name="mode"/>
    /// ("Failed to get \"write\" lock"), or null when it would get it. Takes nothing.
    /// </summary>
    public static string? Probe(string path, LockMode mode)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        return OperatingSystem.IsLinux() ? Conflict(handle, mode) : null;
    }

    /// <summary>True when some open holds a lock on byte <paramref name="offset"/> of <paramref name="path"/> (for tests and diagnostics).</summary>
    public static bool IsByteLocked(string path, int offset)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        return TestByte(handle, offset);
    }

    /// <summary>Releases every lock, then closes the lock's handle.</summary>
    /// <remarks>
    /// Closing alone is not enough: a child process forked by another thread (Process.Start) holds
    /// a copy of every descriptor until it execs, and the locks live as long as any copy does. An
    /// explicit unlock drops them from the open file description at once.
    /// </remarks>
    public void Dispose()
    {
        if (_handle.IsClosed) return;
        if (OperatingSystem.IsLinux())
        {
            var lk = new Flock { Type = FUnLck, Whence = SeekSet, Start = 0, Length = 0 };
            Fcntl(_handle, FOfdSetLk, ref lk);
        }
        _handle.Dispose();
    }

    // False when the file system has no OFD locks (QEMU then goes on unlocked too).
    private static bool Apply(SafeFileHandle handle, LockMode mode)
    {
        for (int bit = 0; bit < PermissionCount; bit++)
        {
            var p = (ImagePermissions)(1 << bit);
            if ((mode.Held & p) != 0 && !SetByte(handle, PermissionBase + bit)) return false;
            if ((mode.Shared & p) == 0 && !SetByte(handle, UnsharedBase + bit)) return false;
        }
        return true;
    }

    private static string? Conflict(SafeFileHandle handle, LockMode mode)
    {
        for (int bit = 0; bit < PermissionCount; bit++)
            if ((mode.Held & (ImagePermissions)(1 << bit)) != 0 && TestByte(handle, UnsharedBase + bit))
                return $"Failed to get \"{PermissionNames[bit]}\" lock";
        for (int bit = 0; bit < PermissionCount; bit++)
            if ((mode.Shared & (ImagePermissions)(1 << bit)) == 0 && TestByte(handle, PermissionBase + bit))
                return $"Failed to get shared \"{PermissionNames[bit]}\" lock";
        return null;
    }

    private static bool SetByte(SafeFileHandle handle, int offset)
    {
        var lk = new Flock { Type = FRdLck, Whence = SeekSet, Start = offset, Length = 1 };
        if (Fcntl(handle, FOfdSetLk, ref lk) == 0) return true;
        int errno = Marshal.GetLastPInvokeError();
        if (errno is EInval or ENoLck or ENoSys) return false;
        // EAGAIN/EACCES: someone holds an exclusive lock on the byte, which no QEMU-style open does.
        throw new IOException($"could not take the image lock on byte {offset}: errno {errno}");
    }

    // True when another open file description holds a lock on the byte.
    private static bool TestByte(SafeFileHandle handle, int offset)
    {
        if (!OperatingSystem.IsLinux()) return false;
        var lk = new Flock { Type = FWrLck, Whence = SeekSet, Start = offset, Length = 1 };
        if (Fcntl(handle, FOfdGetLk, ref lk) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (errno is EInval or ENoLck or ENoSys) return false;
            throw new IOException($"could not test the lock on byte {offset}: errno {errno}");
        }
        return lk.Type != FUnLck;
    }

    /// <summary>struct flock (Linux 64-bit): short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct Flock
    {
        public short Type;
        public short Whence;
        public long Start;
        public long Length;
        public int Pid;
    }

    [LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    private static partial int Fcntl(SafeFileHandle fd, int cmd, ref Flock lk);
}
