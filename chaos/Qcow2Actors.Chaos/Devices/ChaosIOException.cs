namespace Qcow2Actors.Chaos.Devices;

/// <summary>errno values the chaos devices inject, as Linux numbers them.</summary>
public static class Errno
{
    /// <summary>EIO: a generic I/O error (bad sector, failed write-back, lost device).</summary>
    public const int EIO = 5;

    /// <summary>ENOSPC: no space left on the host filesystem.</summary>
    public const int ENOSPC = 28;

    /// <summary>EROFS: the host filesystem went read-only (ext4 does this after journal errors).</summary>
    public const int EROFS = 30;

    /// <summary>The errno an exception carries: .NET on Unix puts the raw errno in <see cref="Exception.HResult"/> of an <see cref="IOException"/>.</summary>
    public static int Of(Exception exception) => exception is IOException io ? io.HResult : 0;

    /// <summary>The symbolic name of <paramref name="errno"/> for messages (EIO, ENOSPC, EROFS, else the number).</summary>
    public static string Name(int errno) => errno switch
    {
        EIO => "EIO",
        ENOSPC => "ENOSPC",
        EROFS => "EROFS",
        _ => errno.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };
}

/// <summary>
/// An I/O error raised on purpose by a chaos device. It is an ordinary <see cref="IOException"/>
/// whose <see cref="Exception.HResult"/> is the errno, exactly as .NET reports a real failed
/// syscall on Linux, so engine code that inspects HResult sees no difference.
/// </summary>
public sealed class ChaosIOException : IOException
{
    /// <summary>Creates an injected failure of <paramref name="operation"/> on <paramref name="device"/> with <paramref name="errno"/>.</summary>
    public ChaosIOException(string device, string operation, int errno, string? reason = null)
        : base($"{device}: {operation} failed with {Errno.Name(errno)} ({reason ?? "injected"})", errno)
    {
        ErrorNumber = errno;
    }

    /// <summary>The injected errno (same value as <see cref="Exception.HResult"/>).</summary>
    public int ErrorNumber { get; }
}
