namespace Qcow2Actors.Format;

/// <summary>
/// Which caller a reader validates for. All profiles apply the same rules in the same order
/// (QEMU's opener order) and report the same <see cref="Qcow2Rule"/> for the same bytes; they
/// differ only where QEMU's own callers differ.
/// </summary>
public enum ValidationProfile
{
    /// <summary>
    /// Opening an image to read or write it: every rule, plus a few stricter ones of ours
    /// (strings must be valid UTF-8 without NUL, a backing name may not overlap the header,
    /// extension areas may not end in a fragment, directory sizes must match their entries).
    /// </summary>
    Open,

    /// <summary>
    /// <c>info</c>: QEMU's rules only, with QEMU's leniencies (names are cut at the first NUL,
    /// a feature name table with a ragged tail is read as far as it goes, reads past the end of
    /// the file are zeros).
    /// </summary>
    Info,

    /// <summary>
    /// <c>check</c>: as <see cref="Info"/>, but a missing refcount table and the snapshot table's
    /// header fields are left to the checker, which counts them as corruptions (QEMU's BDRV_O_CHECK).
    /// </summary>
    Check,
}
