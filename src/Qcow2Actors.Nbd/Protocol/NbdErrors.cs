namespace Qcow2Actors.Nbd.Protocol;

/// <summary>Maps what an export throws to the errno the client sees.</summary>
internal static class NbdErrors
{
    // Linux errno values as .NET reports them in IOException.HResult on Unix.
    private const int Eio = 5;
    private const int Efbig = 27;
    private const int Enospc = 28;
    private const int Erofs = 30;
    private const int Edquot = 122;

    public static NbdError FromException(Exception ex) => ex switch
    {
        NbdException nbd => nbd.Error,
        // The protocol asks for EDQUOT and EFBIG to be reported as ENOSPC.
        IOException io when io.HResult is Enospc or Edquot or Efbig => NbdError.NoSpace,
        IOException io when io.HResult == Erofs => NbdError.NotPermitted,
        IOException { HResult: Eio } => NbdError.IoError,
        UnauthorizedAccessException => NbdError.NotPermitted,
        ArgumentException => NbdError.InvalidArgument,
        // ENOTSUP is reserved for FAST_ZERO, which exports signal with NbdException; anything else is EIO.
        _ => NbdError.IoError,
    };
}
