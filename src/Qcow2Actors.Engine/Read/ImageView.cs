namespace Qcow2Actors.Engine.Read;

/// <summary>
/// What a reader needs besides the L2 tables: the geometry, the guest size and the L1 table
/// it maps through (the active one, or a snapshot's). Immutable: the writer changes the L1 or
/// the size by building a new view and publishing it into an <see cref="ImageViewCell"/>, so a
/// read in flight finishes on the view it started with.
/// </summary>
internal sealed class ImageView
{
    private readonly ulong[] _l1;

    /// <param name="geometry">Cluster and L2 layout.</param>
    /// <param name="virtualSize">Guest size in bytes.</param>
    /// <param name="l1">Raw L1 entries; ownership passes to the view, which never changes them.</param>
    public ImageView(ImageGeometry geometry, long virtualSize, ulong[] l1)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(virtualSize);
        Geometry = geometry;
        VirtualSize = virtualSize;
        _l1 = l1;
    }

    public ImageGeometry Geometry { get; }
    public long VirtualSize { get; }
    public int L1Size => _l1.Length;
    public ReadOnlySpan<ulong> L1 => _l1;

    /// <summary>The raw L1 entry, or 0 (unallocated) past the end of the table.</summary>
    public ulong L1Entry(long index) => (ulong)index < (ulong)_l1.Length ? _l1[index] : 0;

    /// <summary>A view with one L1 entry changed, for a writer that installs a new L2 table.</summary>
    public ImageView WithL1Entry(int index, ulong entry)
    {
        var copy = (ulong[])_l1.Clone();
        copy[index] = entry;
        return new ImageView(Geometry, VirtualSize, copy);
    }

    /// <summary>A copy of the L1 words, for a writer that derives a grown or rewritten table.</summary>
    public ulong[] CopyL1() => (ulong[])_l1.Clone();
}

/// <summary>
/// The single mutable reference readers go through: <see cref="Current"/> is read once per
/// request, <see cref="Publish"/> swaps in the writer's next <see cref="ImageView"/> atomically.
/// </summary>
internal sealed class ImageViewCell(ImageView initial)
{
    private ImageView _current = initial;

    public ImageView Current => Volatile.Read(ref _current);

    public void Publish(ImageView view) => Volatile.Write(ref _current, view);
}
