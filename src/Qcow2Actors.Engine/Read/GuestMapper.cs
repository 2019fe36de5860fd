using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Read;

/// <summary>
/// Turns guest offsets into <see cref="GuestExtent"/>s through one L1 entry's L2 table
/// (FORMAT.md §6 read rules, §7 subclusters). Pure: no I/O, no state, so the writer can use
/// the same classification when it decides what a write must allocate.
/// Every damaged entry becomes a <see cref="Qcow2ImageCorruptException"/> naming the guest
/// offset and the table, never a wrong read.
/// </summary>
internal static class GuestMapper
{
    /// <summary>
    /// Host offset of the L2 table covering <paramref name="guestOffset"/>, or 0 when the L1
    /// entry says the whole range is unallocated.
    /// </summary>
    public static long L2Offset(ImageView view, long guestOffset)
    {
        var g = view.Geometry;
        long index = g.L1Index(guestOffset);
        var entry = new L1Entry(view.L1Entry(index));
        if (entry.ReservedBits != 0)
            throw Corrupt(guestOffset, $"L1 entry {index} (0x{entry.Raw:X16}) has reserved bits set");
        long l2 = entry.L2Offset;
        if ((l2 & (g.ClusterSize - 1)) != 0)
            throw Corrupt(guestOffset, $"L1 entry {index} points to an L2 table at 0x{l2:X}, not cluster aligned");
        return l2;
    }

    /// <summary>
    /// The longest run starting at <paramref name="guestOffset"/> that is stored one way, no
    /// longer than <paramref name="maxLength"/> and not past the L2 table's coverage.
    /// <paramref name="l2"/> is null when the L1 entry is 0.
    /// </summary>
    public static GuestExtent MapRun(ImageGeometry g, L2View? l2, long guestOffset, long maxLength)
    {
        // Lengths to the next boundary, never the boundary itself: the last L2 table below 2^63
        // ends exactly at 2^63, which does not fit in a long.
        long coverageLeft = (1L << g.L2CoverageBits) - (guestOffset & ((1L << g.L2CoverageBits) - 1));
        long limit = guestOffset + Math.Min(maxLength, coverageLeft);
        if (l2 is null) return new GuestExtent(guestOffset, limit - guestOffset, ExtentKind.Unallocated);

        var first = Classify(g, l2, guestOffset);
        if (first.Kind == ExtentKind.Compressed)
        {
            long clusterLeft = g.ClusterSize - (guestOffset & (g.ClusterSize - 1));
            return first with { Offset = guestOffset, Length = Math.Min(clusterLeft, limit - guestOffset) };
        }

        long unit = g.SubclusterSize;
        long pos = guestOffset + Math.Min(unit - (guestOffset & (unit - 1)), limit - guestOffset);
        while (pos < limit)
        {
            var next = Classify(g, l2, pos);
            if (next.Kind != first.Kind) break;
            long expectedHost = first.HostOffset >= 0 ? first.HostOffset + (pos - guestOffset) : -1;
            if (next.HostOffset != expectedHost) break;
            pos += Math.Min(unit, limit - pos);
        }
        return first with { Offset = guestOffset, Length = pos - guestOffset };
    }

    /// <summary>
    /// Classifies the unit (cluster, or subcluster with extended L2) holding
    /// <paramref name="guestOffset"/>; the host offset returned is that of <paramref name="guestOffset"/> itself.
    /// </summary>
    public static GuestExtent Classify(ImageGeometry g, L2View l2, long guestOffset)
    {
        int index = g.L2Index(guestOffset);
        // Format's L2Entry is the one classification; this adds what a read must refuse.
        var entry = new L2Entry(l2.Entry(index), g.ExtendedL2 ? l2.Bitmap(index) : 0);
        long inCluster = guestOffset & (g.ClusterSize - 1);

        if (entry.IsCompressed)
        {
            if (g.ExternalDataFile)
                throw Corrupt(guestOffset, $"{Where(l2, index)} is compressed, which an image with an external data file cannot have");
            if (entry.Bitmap != 0)
                throw Corrupt(guestOffset, $"{Where(l2, index)} is compressed but has subcluster bits 0x{entry.Bitmap:X16}");
            if (entry.IsCopied)
                throw Corrupt(guestOffset, $"{Where(l2, index)} is compressed and has the COPIED bit");
            long coffset = entry.CompressedHostOffset(g.ClusterBits);
            if (coffset >> 56 != 0)
                throw Corrupt(guestOffset, $"{Where(l2, index)} has compressed data offset 0x{coffset:X} beyond 2^56");
            return new GuestExtent(guestOffset, 0, ExtentKind.Compressed, coffset, entry.CompressedReadLength(g.ClusterBits));
        }

        long host = entry.HostOffset;
        bool hasCluster = host != 0 || (g.ExternalDataFile && entry.IsCopied);
        if (hasCluster && (host & (g.ClusterSize - 1)) != 0)
            throw Corrupt(guestOffset, $"{Where(l2, index)} points to data at 0x{host:X}, not cluster aligned");
        // Bit 0 is not a zero flag in extended entries; QEMU ignores it there, and so do we.
        if (entry.StandardReservedBits != 0)
            throw Corrupt(guestOffset, $"{Where(l2, index)} (0x{entry.Word0:X16}) has reserved bits set");

        if (!g.ExtendedL2)
        {
            if (entry.ZeroFlag)
                return new GuestExtent(guestOffset, 0, ExtentKind.Zero, hasCluster ? host + inCluster : -1);
            return hasCluster
                ? new GuestExtent(guestOffset, 0, ExtentKind.Data, host + inCluster)
                : new GuestExtent(guestOffset, 0, ExtentKind.Unallocated);
        }

        uint alloc = entry.AllocBits;
        uint zero = entry.ZeroBits;
        if ((alloc & zero) != 0)
            throw Corrupt(guestOffset, $"{Where(l2, index)} has subclusters marked both allocated and zero (bitmap 0x{entry.Bitmap:X16})");
        int sc = (int)(inCluster >> g.SubclusterBits);
        uint bit = 1u << sc;
        if (!hasCluster)
        {
            if (alloc != 0)
                throw Corrupt(guestOffset, $"{Where(l2, index)} has allocated subclusters but no host cluster (bitmap 0x{entry.Bitmap:X16})");
            return new GuestExtent(guestOffset, 0, (zero & bit) != 0 ? ExtentKind.Zero : ExtentKind.Unallocated);
        }
        if ((zero & bit) != 0) return new GuestExtent(guestOffset, 0, ExtentKind.Zero, host + inCluster);
        if ((alloc & bit) != 0) return new GuestExtent(guestOffset, 0, ExtentKind.Data, host + inCluster);
        return new GuestExtent(guestOffset, 0, ExtentKind.Unallocated, host + inCluster);
    }

    private static string Where(L2View l2, int index) => $"L2 table at 0x{l2.HostOffset:X} entry {index}";

    internal static Qcow2ImageCorruptException Corrupt(long guestOffset, string problem) =>
        new($"corrupt image at guest offset {guestOffset} (0x{guestOffset:X}): {problem}");
}
