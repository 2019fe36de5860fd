namespace Qcow2Actors.Engine.Read;

/// <summary>
/// The numbers that turn a guest offset into table indexes (FORMAT.md §6-§7). Fixed for the
/// life of an open image: nothing the writer does changes the cluster size or the L2 layout.
/// </summary>
internal sealed class ImageGeometry
{
    /// <summary>Subclusters per cluster with extended L2 entries.</summary>
    public const int SubclustersPerCluster = 32;

    /// <summary>Host offsets are 56-bit; bits above are flags or reserved.</summary>
    public const ulong OffsetMask = 0x00FF_FFFF_FFFF_FE00;

    public ImageGeometry(int clusterBits, bool extendedL2, bool externalDataFile, int version = 3)
    {
        if (clusterBits is < 9 or > 21) throw new ArgumentOutOfRangeException(nameof(clusterBits));
        if (extendedL2 && clusterBits < 14) throw new ArgumentOutOfRangeException(nameof(clusterBits), "extended L2 needs cluster_bits >= 14");
        ClusterBits = clusterBits;
        ExtendedL2 = extendedL2;
        ExternalDataFile = externalDataFile;
        Version = version;
        L2Bits = clusterBits - (extendedL2 ? 4 : 3);
        SubclusterBits = extendedL2 ? clusterBits - 5 : clusterBits;
    }

    public int ClusterBits { get; }
    public long ClusterSize => 1L << ClusterBits;
    public bool ExtendedL2 { get; }
    public bool ExternalDataFile { get; }
    public int Version { get; }

    /// <summary>log2 of the entries in one L2 table (the table is always one cluster).</summary>
    public int L2Bits { get; }
    public int L2Entries => 1 << L2Bits;

    /// <summary>Guest bytes one L2 table covers, as a shift.</summary>
    public int L2CoverageBits => ClusterBits + L2Bits;

    /// <summary>log2 of the mapping unit: the subcluster with extended L2, else the cluster.</summary>
    public int SubclusterBits { get; }
    public long SubclusterSize => 1L << SubclusterBits;

    /// <summary>Width of the compressed descriptor's offset field (x = 62 − (cluster_bits − 8)).</summary>
    public int CompressedOffsetBits => 62 - (ClusterBits - 8);

    /// <summary>
    /// Bits of the subclusters that guest range [from, to) touches inside its cluster (the
    /// range must not cross a cluster boundary); all 32 bits for standard L2 entries.
    /// </summary>
    public uint SubclusterMask(long from, long to)
    {
        if (!ExtendedL2) return uint.MaxValue;
        int first = (int)((from & (ClusterSize - 1)) >> SubclusterBits);
        int last = (int)(((to - 1) & (ClusterSize - 1)) >> SubclusterBits);
        return (uint)(((1UL << (last + 1)) - 1) & ~((1UL << first) - 1));
    }

    public long L1Index(long guestOffset) => guestOffset >>> L2CoverageBits;
    public int L2Index(long guestOffset) => (int)((guestOffset >>> ClusterBits) & (L2Entries - 1));
}
