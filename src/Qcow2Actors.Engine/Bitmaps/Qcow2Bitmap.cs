namespace Qcow2Actors.Engine;

/// <summary>
/// One persistent dirty bitmap of a qcow2 image as an open image sees it: its name, the guest
/// bytes each bit stands for, and whether its content can be trusted.
/// </summary>
public sealed class Qcow2Bitmap
{
    internal Qcow2Bitmap(string name, long granularity, bool enabled, bool inUse, bool inconsistent, bool tracked)
    {
        Name = name;
        Granularity = granularity;
        Enabled = enabled;
        InUse = inUse;
        Inconsistent = inconsistent;
        Tracked = tracked;
    }

    /// <summary>The bitmap's name (unique in the image).</summary>
    public string Name { get; }

    /// <summary>Guest bytes per bit (a power of two, 512 B to 2 GiB).</summary>
    public long Granularity { get; }

    /// <summary>The directory's auto flag: writes set the bitmap's bits (qemu-img info's "auto").</summary>
    public bool Enabled { get; }

    /// <summary>
    /// The directory's in-use flag as it is on disk now: set while a writer has the bitmap open
    /// (QEMU), or while the bits this engine stored for a tracked bitmap miss a write (from the first
    /// write to a granule they lack until the next checkpoint or close stores them).
    /// </summary>
    public bool InUse { get; }

    /// <summary>
    /// The content cannot be trusted: the bitmap was already in use on disk when the image was
    /// opened (a writer crashed or still has it). QEMU refuses such a bitmap for merges, copies
    /// and NBD exports, and so should callers.
    /// </summary>
    public bool Inconsistent { get; }

    /// <summary>
    /// This open keeps the bitmap up to date (a read-write open and an enabled, consistent
    /// bitmap): its extents include writes not yet stored in the image file.
    /// </summary>
    public bool Tracked { get; }

    /// <inheritdoc/>
    public override string ToString() => $"{Name} (granularity {Granularity}{(Enabled ? ", auto" : "")}{(InUse ? ", in-use" : "")})";
}

/// <summary>
/// A run of guest bytes whose bitmap bits are all the same: set (<paramref name="Dirty"/>, written
/// since the bitmap was cleared) or clear. Runs are whole granules except at the edges of the asked range.
/// </summary>
/// <param name="Start">Guest byte offset where the run starts.</param>
/// <param name="Length">Bytes in the run.</param>
/// <param name="Dirty">True when the run's bits are set.</param>
public readonly record struct BitmapExtent(long Start, long Length, bool Dirty);
