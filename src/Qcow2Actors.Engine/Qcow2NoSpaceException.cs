namespace Qcow2Actors.Engine;

/// <summary>
/// The host filesystem had no room for what one request needed (ENOSPC): new data clusters, a
/// new table, or journal space reserved ahead for the request's metadata. Only that request
/// failed and nothing of it was half applied: the image stays writable, and the same request
/// succeeds once space is freed. <see cref="Exception.HResult"/> is the errno (28), so servers
/// can report it as ENOSPC (NBD_ENOSPC).
/// </summary>
public sealed class Qcow2NoSpaceException : IOException
{
    /// <summary>Linux ENOSPC.</summary>
    public const int Errno = 28;

    /// <summary>Creates the exception with a one-line message naming what needed the space.</summary>
    public Qcow2NoSpaceException(string message) : base(message) => HResult = Errno;

    /// <summary>Creates the exception with a one-line message and the failure underneath.</summary>
    public Qcow2NoSpaceException(string message, Exception inner) : base(message, inner) => HResult = Errno;

    /// <summary>Creates the exception without a message (for serializers; prefer the message overloads).</summary>
    public Qcow2NoSpaceException() => HResult = Errno;

    /// <summary>True for an out-of-space failure from the OS: ENOSPC, or EDQUOT (122), which a user sees the same way.</summary>
    public static bool IsNoSpace(Exception exception) => exception is IOException { HResult: Errno or 122 };
}
