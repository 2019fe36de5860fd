using System.Text;

namespace Qcow2Actors.Engine.Create;

/// <summary>
/// The sizes qemu-img measure reports for a new qcow2 image: the file a fully allocated image of a
/// virtual size needs (header, L1, L2 and refcount metadata, every data cluster), the metadata
/// that counting all of it takes, and the space persistent bitmaps copied from a source would add.
/// The arithmetic is QEMU's, so the figures agree byte for byte.
/// </summary>
public static class ImageMeasure
{
    private const int L1EntrySize = 8;
    private const int RefcountTableEntrySize = 8;
    // A bitmap directory entry's fixed part (FORMAT.md §9), before the name and extra data.
    private const int BitmapDirectoryEntryFixedSize = 24;

    /// <summary>
    /// Bytes a qcow2 file with every cluster of <paramref name="virtualSize"/> allocated occupies:
    /// one header cluster, all L2 tables, the L1 table, refcount blocks and table, and the data.
    /// </summary>
    /// <param name="virtualSize">Guest size in bytes (rounded up to a cluster).</param>
    /// <param name="clusterSize">Cluster size in bytes.</param>
    /// <param name="refcountBits">Refcount width in bits (a power of two up to 64).</param>
    /// <param name="extendedL2">Whether L2 entries are 16-byte extended entries.</param>
    public static long FullyAllocated(long virtualSize, int clusterSize, int refcountBits, bool extendedL2)
    {
        long aligned = AlignUp(virtualSize, clusterSize);
        int l2EntrySize = extendedL2 ? 16 : 8;
        long meta = clusterSize; // the header
        long l2Entries = AlignUp(aligned / clusterSize, clusterSize / l2EntrySize);
        meta += l2Entries * l2EntrySize;
        long l1Entries = AlignUp(l2Entries * l2EntrySize / clusterSize, clusterSize / L1EntrySize);
        meta += l1Entries * L1EntrySize;
        meta += RefcountMetadataSize((meta + aligned) / clusterSize, clusterSize, refcountBits);
        return meta + aligned;
    }

    /// <summary>
    /// Bytes of refcount blocks and table needed to count <paramref name="clusters"/> clusters and
    /// the refcount clusters themselves: the fixed point where counting adds no further cluster.
    /// </summary>
    public static long RefcountMetadataSize(long clusters, int clusterSize, int refcountBits)
    {
        long blocksPerTableCluster = clusterSize / RefcountTableEntrySize;
        long refcountsPerBlock = (long)clusterSize * 8 / refcountBits;
        long table = 0, blocks = 0, n = 0, last;
        do
        {
            last = n;
            blocks = DivRoundUp(clusters + table + blocks, refcountsPerBlock);
            table = DivRoundUp(blocks, blocksPerTableCluster);
            n = clusters + blocks + table;
        }
        while (n != last);
        return (blocks + table) * clusterSize;
    }

    /// <summary>
    /// True when an image of <paramref name="virtualSize"/> would need an L1 table above QEMU's
    /// 32 MiB limit ("The image size is too large (try using a larger cluster size)").
    /// </summary>
    public static bool L1TooLarge(long virtualSize, int clusterSize, bool extendedL2)
    {
        long aligned = AlignUp(virtualSize, clusterSize);
        long l2Tables = DivRoundUp(aligned / clusterSize, clusterSize / (extendedL2 ? 16 : 8));
        return l2Tables * L1EntrySize > Format.Qcow2Header.MaxL1Size * 8L;
    }

    /// <summary>
    /// Bytes that copying persistent bitmaps of a <paramref name="virtualSize"/>-byte disk into an image
    /// of <paramref name="clusterSize"/> needs: every bitmap fully allocated, its bitmap table, and the
    /// directory, each rounded up to clusters.
    /// </summary>
    /// <param name="bitmaps">Name and granularity (bytes) of each persistent bitmap.</param>
    /// <param name="virtualSize">Guest size in bytes the bitmaps cover.</param>
    /// <param name="clusterSize">Cluster size of the new image.</param>
    public static long BitmapsSize(IEnumerable<(string Name, long Granularity)> bitmaps, long virtualSize, int clusterSize)
    {
        ArgumentNullException.ThrowIfNull(bitmaps);
        long total = 0, directory = 0;
        foreach (var (name, granularity) in bitmaps)
        {
            long bytes = DivRoundUp(DivRoundUp(virtualSize, granularity), 8);
            long clusters = DivRoundUp(bytes, clusterSize);
            total += clusters * clusterSize + AlignUp(clusters * 8, clusterSize);
            directory += AlignUp(BitmapDirectoryEntryFixedSize + Encoding.UTF8.GetByteCount(name), 8);
        }
        return total + AlignUp(directory, clusterSize);
    }

    private static long AlignUp(long value, long alignment) => (value + alignment - 1) / alignment * alignment;

    private static long DivRoundUp(long value, long divisor) => (value + divisor - 1) / divisor;
}
