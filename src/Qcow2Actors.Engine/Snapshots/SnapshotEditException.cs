namespace Qcow2Actors.Engine.Snapshots;

/// <summary>
/// A snapshot operation was refused before anything was written: the snapshot does not exist,
/// the name is taken or not valid, the image is in a state that must be recovered first, the
/// format cannot hold the snapshot (1-bit refcounts, external data file) or a refcount would exceed
/// its width. The message is one line for the user; the image is unchanged. <see cref="Code"/> says
/// which kind of refusal it is, in words a control API can pass on.
/// </summary>
public sealed class SnapshotEditException : IOException
{
    /// <summary><see cref="Code"/>: no snapshot has that ID or name.</summary>
    public const string NotFoundCode = "snapshot-not-found";

    /// <summary><see cref="Code"/>: a snapshot of that name exists already (online creates refuse duplicates, as QEMU's QMP does).</summary>
    public const string ExistsCode = "snapshot-exists";

    /// <summary><see cref="Code"/>: the name is empty, longer than 255 UTF-8 bytes, or holds a control character.</summary>
    public const string BadNameCode = "bad-name";

    /// <summary><see cref="Code"/>: any other refusal (image open read-only, pending journal, format limits, refcount width).</summary>
    public const string RefusedCode = "refused";

    /// <summary>Creates the exception with a one-line message (<see cref="Code"/> is <see cref="RefusedCode"/>).</summary>
    /// <param name="message">What was refused and why.</param>
    public SnapshotEditException(string message) : base(message) { }

    /// <summary>Creates the exception with a one-line message and the kind of refusal.</summary>
    /// <param name="message">What was refused and why.</param>
    /// <param name="code">One of the <c>*Code</c> constants.</param>
    public SnapshotEditException(string message, string code) : base(message) => Code = code;

    /// <summary>Creates the exception with a one-line message and the failure underneath.</summary>
    /// <param name="message">What was refused and why.</param>
    /// <param name="inner">The underlying failure.</param>
    public SnapshotEditException(string message, Exception inner) : base(message, inner) { }

    /// <summary>Creates the exception without a message (prefer the message overloads).</summary>
    public SnapshotEditException() { }

    /// <summary>
    /// The kind of refusal, stable for programs: <see cref="NotFoundCode"/>, <see cref="ExistsCode"/>,
    /// <see cref="BadNameCode"/> or <see cref="RefusedCode"/>.
    /// </summary>
    public string Code { get; } = RefusedCode;
}
