namespace Qcow2Actors.CrashLab;

/// <summary>The crash lab could not run: a bad log, a missing image or snapshot. The message is one line naming it.</summary>
public sealed class CrashLabException : Exception
{
    /// <summary>Creates the error with its one-line message.</summary>
    public CrashLabException(string message) : base(message) { }

    /// <summary>Creates the error with its one-line message and the failure behind it.</summary>
    public CrashLabException(string message, Exception inner) : base(message, inner) { }

    /// <summary>Required by the analyzers.</summary>
    public CrashLabException() { }
}
