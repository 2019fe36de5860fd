namespace Qcow2Actors.Engine;

/// <summary>
/// A table entry that a read reached is damaged (reserved bits, misaligned or out-of-file
/// offsets, contradictory subcluster bits, undecodable compressed data). The message is one
/// line naming the guest offset and the table, so an operator can find the bad entry; the
/// image stays open and reads elsewhere keep working.
/// </summary>
public sealed class Qcow2ImageCorruptException : IOException
{
    /// <summary>Creates the exception with a one-line message.</summary>
    public Qcow2ImageCorruptException(string message) : base(message) { }

    /// <summary>Creates the exception with a one-line message and the failure underneath.</summary>
    public Qcow2ImageCorruptException(string message, Exception inner) : base(message, inner) { }

    /// <summary>Creates the exception without a message (for serializers; prefer the message overloads).</summary>
    public Qcow2ImageCorruptException() { }
}
