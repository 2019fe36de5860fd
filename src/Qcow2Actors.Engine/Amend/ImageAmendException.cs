namespace Qcow2Actors.Engine.Amend;

/// <summary>
/// <see cref="ImageAmender"/> refused a change; the message is one line, worded as qemu-img amend
/// words the same refusal where it has one. Nothing was written unless the message says so.
/// </summary>
public sealed class ImageAmendException : Exception
{
    /// <summary>Creates the refusal with its one-line message.</summary>
    public ImageAmendException(string message) : base(message) { }

    /// <summary>Creates the refusal with its one-line message and the failure behind it.</summary>
    public ImageAmendException(string message, Exception inner) : base(message, inner) { }

    /// <summary>Required by the analyzers; the amender always gives a message.</summary>
    public ImageAmendException() { }
}
