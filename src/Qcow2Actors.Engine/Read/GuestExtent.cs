namespace Qcow2Actors.Engine.Read;

/// <summary>How a run of guest bytes is stored in one image layer.</summary>
internal enum ExtentKind : byte
{
    /// <summary>Plain data at <see cref="GuestExtent.HostOffset"/> (image file or external data file).</summary>
    Data,
    /// <summary>Reads as zeros; the backing file is not consulted.</summary>
    Zero,
    /// <summary>Not stored here: read from the backing file, or zeros without one.</summary>
    Unallocated,
    /// <summary>Part of one compressed cluster.</summary>
    Compressed,
}

/// <summary>
/// A maximal run of guest bytes stored the same way. <see cref="HostOffset"/> is the host byte
/// of <see cref="Offset"/> for data, and for zero/unallocated runs whose space is reserved
/// (preallocated zero clusters, unallocated subclusters of an allocated cluster); −1 otherwise.
/// For compressed runs it is the compressed stream's host offset and
/// <see cref="CompressedLength"/> the bytes to read (FORMAT.md §6).
/// </summary>
internal readonly record struct GuestExtent(long Offset, long Length, ExtentKind Kind, long HostOffset = -1, int CompressedLength = 0)
{
    public long End => Offset + Length;
    public bool HasHostOffset => HostOffset >= 0;
}
