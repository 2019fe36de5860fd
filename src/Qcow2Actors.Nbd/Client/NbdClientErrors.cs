using static Qcow2Actors.Nbd.Protocol.NbdProtocol;

namespace Qcow2Actors.Nbd.Client;

/// <summary>The one-line messages the client's failures carry, and the names of the errors NBD puts on the wire.</summary>
internal static class NbdClientErrors
{
    /// <summary>The errno's name as a C programmer knows it; unknown values as "errno N".</summary>
    public static string ErrnoName(uint error) => error switch
    {
        1 => "EPERM",
        5 => "EIO",
        12 => "ENOMEM",
        22 => "EINVAL",
        28 => "ENOSPC",
        75 => "EOVERFLOW",
        95 => "ENOTSUP",
        108 => "ESHUTDOWN",
        _ => FormattableString.Invariant($"errno {error}"),
    };

    /// <summary>The name of an option error reply (NBD_REP_ERR_*).</summary>
    public static string OptionErrorName(uint reply) => reply switch
    {
        RepErrUnsup => "NBD_REP_ERR_UNSUP",
        RepErrPolicy => "NBD_REP_ERR_POLICY",
        RepErrInvalid => "NBD_REP_ERR_INVALID",
        RepErrTlsReqd => "NBD_REP_ERR_TLS_REQD",
        RepErrUnknown => "NBD_REP_ERR_UNKNOWN",
        RepErrShutdown => "NBD_REP_ERR_SHUTDOWN",
        RepErrTooBig => "NBD_REP_ERR_TOO_BIG",
        _ => FormattableString.Invariant($"option error 0x{reply:x8}"),
    };

    /// <summary>The name of a command, as error messages use it.</summary>
    public static string CommandName(ushort command) => command switch
    {
        CmdRead => "read",
        CmdWrite => "write",
        CmdFlush => "flush",
        CmdTrim => "trim",
        CmdWriteZeroes => "write-zeroes",
        CmdBlockStatus => "block-status",
        CmdDisc => "disconnect",
        _ => FormattableString.Invariant($"command {command}"),
    };

    /// <summary>
    /// A failed request: names the server, the export, the errno and where, plus the server's own text when it sent one.
    /// HResult carries the errno, as .NET's own I/O errors do on Unix.
    /// </summary>
    public static IOException ServerError(string endpoint, string export, ushort command, long offset, long length, uint error, string? message)
    {
        var text = FormattableString.Invariant(
            $"nbd server {endpoint} export '{export}': {ErrnoName(error)} on {CommandName(command)} at {offset} length {length}");
        if (!string.IsNullOrWhiteSpace(message)) text += ": " + OneLine(message);
        return new IOException(text) { HResult = (int)error };
    }

    /// <summary>The connection ended (EOF, reset, a protocol violation): every request in flight and after fails with this.</summary>
    public static IOException Closed(string endpoint, string export, string why, Exception? inner = null) =>
        new NbdConnectionClosedException($"nbd server {endpoint} export '{export}': {why}", inner);

    /// <summary>Server-supplied text squeezed onto one line, so a hostile server cannot forge extra lines in our output.</summary>
    public static string OneLine(string text)
    {
        var chars = text.Trim().ToCharArray();
        for (var i = 0; i < chars.Length; i++) if (char.IsControl(chars[i])) chars[i] = ' ';
        return chars.Length > 200 ? new string(chars, 0, 200) + "..." : new string(chars);
    }
}
