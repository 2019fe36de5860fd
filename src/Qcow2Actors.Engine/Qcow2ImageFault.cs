namespace Qcow2Actors.Engine;

/// <summary>What went wrong with an open image (see <see cref="Qcow2OpenOptions.OnFault"/>).</summary>
public enum Qcow2ImageFaultKind
{
    /// <summary>
    /// A flush (fsync), journal write or checkpoint failed: the image is read-only for good in this
    /// process, and its journal stays so the next write open (or <c>q2a recover</c>) replays every
    /// acknowledged write.
    /// </summary>
    ReadOnly,

    /// <summary>
    /// Metadata was found inconsistent (or a write would have overwritten it): the corrupt bit is
    /// set where possible and the image is read-only; repair it with <c>q2a check -r all</c>.
    /// </summary>
    Corrupt,

    /// <summary>A write needed space the file system did not have; the image stays writable.</summary>
    NoSpace,

    /// <summary>
    /// The image was closed without a clean checkpoint (it had turned read-only or corrupt, the
    /// close itself failed, or its <see cref="ImageHost"/> was disposed while it was open): its
    /// header still says journal pending or dirty.
    /// </summary>
    UncleanClose,
}

/// <summary>One fault of an open image, reported once when it happens.</summary>
/// <param name="Path">The image file (full path).</param>
/// <param name="Kind">What happened.</param>
/// <param name="Reason">Why, in one line (e.g. the failed call and its error).</param>
public sealed record Qcow2ImageFault(string Path, Qcow2ImageFaultKind Kind, string Reason)
{
    /// <summary>True for the kinds after which the image accepts no more writes in this process.</summary>
    public bool TurnsReadOnly => Kind is Qcow2ImageFaultKind.ReadOnly or Qcow2ImageFaultKind.Corrupt;
}
