namespace Qcow2Actors.Engine.Snapshots;

/// <summary>
/// A snapshot operation was refused before anything was written: the snapshot does not exist,
/// the image is in a state that must be recovered first, the format cannot hold the snapshot
/// (1-bit refcounts, external data file) or a refcount would exceed its width. The message is
/// one line for the user; the image is unchanged.
/// </summary>
public sealed class SnapshotEditException : IOException
{
    /// <summary>Creates the exception with a one-line message.</summary>
    /// <param name="message">What was refused and why.</param>
    public SnapshotEditException(string message) : base(message) { }

    /// <summary>Creates the exception with a one-line message and the failure underneath.</summary>
    /// <param name="message">What was refused and why.</param>
    /// <param name="inner">The underlying failure.</param>
    public SnapshotEditException(string message, Exception inner) : base(message, inner) { }

    /// <summary>Creates the exception without a message (prefer the message overloads).</summary>
    public SnapshotEditException() { }
}
