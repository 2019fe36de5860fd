namespace Qcow2Actors.Cli.Commands.Ctl;

/// <summary>The host answered with an error reply: <c>q2a ctl: MESSAGE (CODE)</c>, exit 1.</summary>
internal sealed class CtlHostException : Exception
{
    /// <summary>Creates the error from the host's reply.</summary>
    public CtlHostException(string code, string message) : base(message) => Code = code;

    /// <summary>The stable kebab-case code of the reply (<c>tenant-not-found</c>, ...).</summary>
    public string Code { get; } = "internal";

    /// <summary>Required by the analyzers; never used.</summary>
    public CtlHostException() { }

    /// <summary>Required by the analyzers; never used.</summary>
    public CtlHostException(string message) : base(message) { }

    /// <summary>Required by the analyzers; never used.</summary>
    public CtlHostException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>
/// A bad command line found after parsing (a size, a count, a missing choice), or a host that cannot
/// be reached: one line naming what is wrong, exit 2.
/// </summary>
internal sealed class CtlUsageException : Exception
{
    /// <summary>Creates the error with its one-line message.</summary>
    public CtlUsageException(string message) : base(message) { }

    /// <summary>Creates the error with its one-line message and the failure behind it.</summary>
    public CtlUsageException(string message, Exception inner) : base(message, inner) { }

    /// <summary>Required by the analyzers; never used.</summary>
    public CtlUsageException() { }
}
