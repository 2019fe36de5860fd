namespace Qcow2Actors.Nbd;

/// <summary>What an export does with NBD TRIM, as qemu-nbd's <c>--discard</c> chooses.</summary>
public enum DiscardMode
{
    /// <summary>
    /// Free the clusters trimmed (the engine's DiscardAsync); they then read as zeros or from the
    /// backing file, and WRITE_ZEROES may free clusters too unless the client sends NO_HOLE.
    /// </summary>
    Unmap,

    /// <summary>
    /// Accept TRIM (still advertised, as qemu-nbd does) and change nothing; WRITE_ZEROES keeps
    /// its clusters allocated. qemu-nbd's default.
    /// </summary>
    Ignore,
}
