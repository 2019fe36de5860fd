namespace Qcow2Actors.Nbd;

/// <summary>The error values NBD allows on the wire (a fixed subset of Linux errno numbers).</summary>
public enum NbdError : uint
{
    /// <summary>Success.</summary>
    None = 0,

    /// <summary>EPERM (1): e.g. a write to a read-only export.</summary>
    NotPermitted = 1,

    /// <summary>EIO (5): the backing store failed.</summary>
    IoError = 5,

    /// <summary>ENOMEM (12): the protocol asks servers to avoid it.</summary>
    OutOfMemory = 12,

    /// <summary>EINVAL (22): bad offset, length, flag or command.</summary>
    InvalidArgument = 22,

    /// <summary>ENOSPC (28): no room for the write (also EDQUOT, EFBIG, or a write past the end).</summary>
    NoSpace = 28,

    /// <summary>EOVERFLOW (75): only for a DF read too large to send in one chunk.</summary>
    Overflow = 75,

    /// <summary>ENOTSUP (95): only for a FAST_ZERO write-zeroes that would not be fast.</summary>
    NotSupported = 95,

    /// <summary>ESHUTDOWN (108): the server is going away; the client should disconnect.</summary>
    Shutdown = 108,
}

/// <summary>
/// Thrown by an <see cref="INbdExport"/> to fail one request with a chosen <see cref="NbdError"/>.
/// The connection and the other requests carry on; the message goes to the client in a
/// structured error reply when structured replies were negotiated.
/// </summary>
public sealed class NbdException : Exception
{
    /// <summary>The errno the client receives.</summary>
    public NbdError Error { get; }

    /// <summary>Creates an exception that fails the request with <paramref name="error"/>.</summary>
    public NbdException(NbdError error, string message, Exception? innerException = null)
        : base(message, innerException)
    {
        if (error == NbdError.None) throw new ArgumentOutOfRangeException(nameof(error), "an error must be nonzero");
        Error = error;
    }
}
