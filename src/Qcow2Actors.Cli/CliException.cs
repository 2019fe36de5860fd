namespace Qcow2Actors.Cli;

/// <summary>
/// A user error whose message is already the exact line qemu-img or qemu-io would print
/// (without the tool prefix); <c>CliRunner</c> prints it after "q2a: ".
/// </summary>
internal sealed class CliException : Exception
{
    /// <summary>Creates the error with its one-line message.</summary>
    public CliException(string message) : base(message) { }

    /// <summary>Creates the error with its one-line message and the failure behind it.</summary>
    public CliException(string message, Exception inner) : base(message, inner) { }

    /// <summary>Required by the analyzers; never used by the CLI itself.</summary>
    public CliException() { }
}
