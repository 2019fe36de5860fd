namespace Qcow2Actors.Format;

/// <summary>How a guest cluster reads, decided by its L2 entry (FORMAT.md §6 read rules).</summary>
public enum L2EntryKind
{
    /// <summary>Not allocated: read from the backing file, or zeros.</summary>
    Unallocated,
    /// <summary>Data in a host cluster (in extended mode, the subcluster bitmap refines this).</summary>
    Normal,
    /// <summary>Reads as zeros, no host cluster.</summary>
    ZeroPlain,
    /// <summary>Reads as zeros with a preallocated host cluster.</summary>
    ZeroAllocated,
    /// <summary>Compressed data.</summary>
    Compressed,
}

/// <summary>How one subcluster of an extended L2 entry reads (FORMAT.md §7 table).</summary>
public enum SubclusterState
{
    /// <summary>Read from the backing file (or zeros); host space may be reserved.</summary>
    Unallocated,
    /// <summary>Data at host offset + sc × subcluster size.</summary>
    Allocated,
    /// <summary>Reads as zeros.</summary>
    Zero,
    /// <summary>The whole cluster is compressed (the bitmap is 0).</summary>
    Compressed,
    /// <summary>Invalid bits: QEMU treats the whole entry as corrupt.</summary>
    Invalid,
}

/// <summary>
/// One L2 entry (FORMAT.md §6-§7): word 0 is the classic 64-bit entry; with extended L2 entries
/// <see cref="Bitmap"/> is word 1, the subcluster bitmap (bits 0-31 allocated, 32-63 zero).
/// </summary>
/// <param name="word0">The 64-bit descriptor word.</param>
/// <param name="bitmap">The subcluster bitmap (extended L2 only; 0 otherwise).</param>
public readonly struct L2Entry(ulong word0, ulong bitmap = 0) : IEquatable<L2Entry>
{
    /// <summary>Bytes per standard entry.</summary>
    public const int StandardSize = 8;
    /// <summary>Bytes per extended entry.</summary>
    public const int ExtendedSize = 16;
    /// <summary>Subclusters per cluster with extended L2 entries.</summary>
    public const int SubclustersPerCluster = 32;
    /// <summary>Bit 63: refcount is exactly 1 (standard clusters in the active tables only).</summary>
    public const ulong CopiedFlag = 1UL << 63;
    /// <summary>Bit 62: compressed cluster.</summary>
    public const ulong CompressedFlag = 1UL << 62;
    /// <summary>Bit 0: reads as zeros (v3 standard entries only).</summary>
    public const ulong ZeroFlagBit = 1UL;
    /// <summary>Bits 9-55 of a standard entry: host cluster offset.</summary>
    public const ulong OffsetMask = 0x00FFFFFFFFFFFE00UL;
    /// <summary>Reserved bits of a standard entry (1-8 and 56-61).</summary>
    public const ulong StandardReservedMask = 0x3F000000000001FEUL;
    /// <summary>Bits 0-61 of the descriptor.</summary>
    public const ulong DescriptorMask = (1UL << 62) - 1;
    /// <summary>Word 1 bits 0-31: subcluster allocated.</summary>
    public const ulong AllocMask = 0x00000000FFFFFFFFUL;
    /// <summary>Word 1 bits 32-63: subcluster reads as zeros.</summary>
    public const ulong ZeroMask = 0xFFFFFFFF00000000UL;
    /// <summary>Size of a compressed sector.</summary>
    public const int SectorSize = 512;

    /// <summary>The descriptor word (word 0).</summary>
    public ulong Word0 { get; } = word0;
    /// <summary>The subcluster bitmap (word 1), 0 for standard entries.</summary>
    public ulong Bitmap { get; } = bitmap;

    /// <summary>Bit 62.</summary>
    public bool IsCompressed => (Word0 & CompressedFlag) != 0;
    /// <summary>Bit 63.</summary>
    public bool IsCopied => (Word0 & CopiedFlag) != 0;
    /// <summary>Bit 0 (standard zero flag; meaningless for compressed entries).</summary>
    public bool ZeroFlag => (Word0 & ZeroFlagBit) != 0;
    /// <summary>Host cluster offset of a standard entry (bits 9-55).</summary>
    public long HostOffset => (long)(Word0 & OffsetMask);
    /// <summary>Reserved bits set in a standard entry.</summary>
    public ulong StandardReservedBits => Word0 & StandardReservedMask;
    /// <summary>Bits 0-31 of word 1: allocated subclusters.</summary>
    public uint AllocBits => (uint)(Bitmap & AllocMask);
    /// <summary>Bits 32-63 of word 1: zero subclusters.</summary>
    public uint ZeroBits => (uint)(Bitmap >> 32);

    /// <summary>Bit position where the sector count of a compressed descriptor starts: 62 − (cluster_bits − 8).</summary>
    /// <param name="clusterBits">Cluster bits.</param>
    public static int CompressedOffsetBits(int clusterBits) => 62 - (clusterBits - 8);

    /// <summary>Host byte offset of compressed data (not aligned).</summary>
    /// <param name="clusterBits">Cluster bits.</param>
    public long CompressedHostOffset(int clusterBits) => (long)(Word0 & ((1UL << CompressedOffsetBits(clusterBits)) - 1));

    /// <summary>Number of additional 512-byte sectors after the one holding the offset.</summary>
    /// <param name="clusterBits">Cluster bits.</param>
    public int CompressedSectors(int clusterBits) =>
        (int)((Word0 >> CompressedOffsetBits(clusterBits)) & ((1UL << (clusterBits - 8)) - 1));

    /// <summary>Bytes to read from <see cref="CompressedHostOffset"/> and feed to the decompressor.</summary>
    /// <param name="clusterBits">Cluster bits.</param>
    public int CompressedReadLength(int clusterBits) =>
        (CompressedSectors(clusterBits) + 1) * SectorSize - (int)(CompressedHostOffset(clusterBits) & (SectorSize - 1));

    /// <summary>
    /// How the cluster reads. Bit 0 is honoured in v2 standard entries too, as QEMU does (the spec
    /// says it must be 0 there; <see cref="Validate"/> reports it). With an external data file an
    /// entry with offset 0 and COPIED maps host offset 0.
    /// </summary>
    /// <param name="version">Image version (2 or 3).</param>
    /// <param name="extended">Whether the image uses extended L2 entries (bit 0 is then unused).</param>
    /// <param name="externalDataFile">Whether the image has an external data file.</param>
    public L2EntryKind GetKind(int version, bool extended, bool externalDataFile = false)
    {
        _ = version; // QEMU reads the zero flag in v2 as well; the parameter states the context.
        if (IsCompressed) return L2EntryKind.Compressed;
        if (!extended && ZeroFlag) return HostOffset != 0 ? L2EntryKind.ZeroAllocated : L2EntryKind.ZeroPlain;
        if (HostOffset == 0 && !(externalDataFile && IsCopied)) return L2EntryKind.Unallocated;
        return L2EntryKind.Normal;
    }

    /// <summary>
    /// The one "can this cluster be written in place" predicate: guest bytes whose subclusters are
    /// <paramref name="touchedSubclusters"/> may be overwritten at <see cref="HostOffset"/> without
    /// allocating, because the entry maps a data cluster (not compressed, not zero, not unallocated)
    /// that this image alone references (COPIED: refcount exactly 1) and, with extended L2 entries,
    /// every touched subcluster already holds data. The caller must also own the L2 table holding the
    /// entry (its L1 entry COPIED) and keep the write off metadata.
    /// </summary>
    /// <param name="extended">Whether the image uses extended L2 entries.</param>
    /// <param name="touchedSubclusters">Subclusters the write touches (bit i = subcluster i; ignored for standard entries).</param>
    public bool CanWriteInPlace(bool extended, uint touchedSubclusters) =>
        !IsCompressed && IsCopied && HostOffset != 0
        && (extended ? (AllocBits & touchedSubclusters) == touchedSubclusters : !ZeroFlag);

    /// <summary>What the COPIED flag must say for a cluster with stored refcount <paramref name="refcount"/> (in the active tables): exactly 1.</summary>
    /// <param name="refcount">The stored refcount.</param>
    public static bool CopiedFor(ulong refcount) => refcount == 1;

    /// <summary>State of subcluster <paramref name="sc"/> of an extended entry (FORMAT.md §7 table).</summary>
    /// <param name="sc">Subcluster index 0-31.</param>
    /// <param name="externalDataFile">Whether offset 0 with COPIED is a real mapping (external data file).</param>
    public SubclusterState GetSubcluster(int sc, bool externalDataFile = false)
    {
        if ((uint)sc >= SubclustersPerCluster) throw new ArgumentOutOfRangeException(nameof(sc), sc, "subcluster index must be 0-31");
        if (IsCompressed) return Bitmap == 0 ? SubclusterState.Compressed : SubclusterState.Invalid;
        bool alloc = (Bitmap & (1UL << sc)) != 0;
        bool zero = (Bitmap & (1UL << (32 + sc))) != 0;
        if (alloc && zero) return SubclusterState.Invalid;
        bool mapped = HostOffset != 0 || (externalDataFile && IsCopied);
        // QEMU judges the whole bitmap: any alloc bit without a host cluster makes the entry invalid.
        if (!mapped && AllocBits != 0) return SubclusterState.Invalid;
        if (alloc) return SubclusterState.Allocated;
        if (zero) return SubclusterState.Zero;
        return SubclusterState.Unallocated;
    }

    /// <summary>
    /// Describes what is wrong with the entry, or null when valid: reserved bits, misaligned host
    /// offset, compressed with COPIED, compressed offset past 2^56, compressed with a non-zero
    /// bitmap, subclusters both allocated and zero, alloc bits without a host cluster, the zero flag
    /// in a v2 image or in extended mode.
    /// </summary>
    /// <param name="clusterBits">Cluster bits.</param>
    /// <param name="extended">Whether the image uses extended L2 entries.</param>
    /// <param name="version">Image version; the zero flag is a v3 feature.</param>
    /// <param name="externalDataFile">Whether the image has an external data file.</param>
    public string? Validate(int clusterBits, bool extended, int version = 3, bool externalDataFile = false)
    {
        if (IsCompressed)
        {
            if (IsCopied) return $"compressed L2 entry 0x{Word0:X16} has COPIED set";
            if (externalDataFile) return $"compressed L2 entry 0x{Word0:X16} in an image with an external data file";
            if (CompressedHostOffset(clusterBits) >= 1L << 56) return $"compressed L2 entry 0x{Word0:X16} has an offset beyond 2^56";
            if (extended && Bitmap != 0) return $"compressed L2 entry 0x{Word0:X16} has a non-zero subcluster bitmap 0x{Bitmap:X16}";
            return null;
        }
        if (StandardReservedBits != 0) return $"L2 entry 0x{Word0:X16} has reserved bits 0x{StandardReservedBits:X16} set";
        if (ZeroFlag && extended) return $"extended L2 entry 0x{Word0:X16} has bit 0 set";
        if (ZeroFlag && version < 3) return $"L2 entry 0x{Word0:X16} has the zero flag set in a version 2 image";
        if ((HostOffset & ((1L << clusterBits) - 1)) != 0) return $"L2 entry 0x{Word0:X16} has unaligned host offset 0x{HostOffset:X}";
        if (extended)
        {
            uint both = AllocBits & ZeroBits;
            if (both != 0) return $"extended L2 entry has subclusters both allocated and zero (bitmap 0x{Bitmap:X16})";
            bool mapped = HostOffset != 0 || (externalDataFile && IsCopied);
            if (!mapped && AllocBits != 0) return $"extended L2 entry has allocated subclusters but no host cluster (bitmap 0x{Bitmap:X16})";
        }
        else if (Bitmap != 0)
        {
            return "standard L2 entry carries a subcluster bitmap";
        }
        return null;
    }

    /// <summary>A standard (or extended, with <paramref name="bitmap"/>) entry mapping a host cluster.</summary>
    /// <param name="hostOffset">Cluster-aligned host offset below 2^56.</param>
    /// <param name="copied">Whether the cluster's refcount is 1.</param>
    /// <param name="bitmap">Subcluster bitmap for extended entries.</param>
    public static L2Entry Standard(long hostOffset, bool copied, ulong bitmap = 0)
    {
        if (((ulong)hostOffset & ~OffsetMask) != 0)
            throw new ArgumentOutOfRangeException(nameof(hostOffset), hostOffset, "host offset must be 512-aligned and below 2^56");
        return new L2Entry((ulong)hostOffset | (copied ? CopiedFlag : 0), bitmap);
    }

    /// <summary>
    /// An extended entry from subcluster masks (bit i of each mask = subcluster i).
    /// </summary>
    /// <param name="hostOffset">Cluster-aligned host offset, or 0.</param>
    /// <param name="copied">COPIED flag.</param>
    /// <param name="allocated">Allocated subclusters.</param>
    /// <param name="zero">Zero subclusters.</param>
    public static L2Entry Extended(long hostOffset, bool copied, uint allocated, uint zero) =>
        Standard(hostOffset, copied, allocated | ((ulong)zero << 32));

    /// <summary>A standard v3 zero entry: plain when <paramref name="preallocatedOffset"/> is 0, else preallocated.</summary>
    /// <param name="preallocatedOffset">Host cluster kept reserved, or 0.</param>
    /// <param name="copied">COPIED for a preallocated cluster with refcount 1.</param>
    public static L2Entry Zero(long preallocatedOffset = 0, bool copied = false) =>
        new(Standard(preallocatedOffset, copied).Word0 | ZeroFlagBit);

    /// <summary>
    /// A compressed entry for <paramref name="compressedLength"/> bytes at <paramref name="hostOffset"/>,
    /// with the sector count of the §6 writer rule: ((off + len − 1) >> 9) − (off >> 9).
    /// </summary>
    /// <param name="hostOffset">Byte offset of the compressed data (any alignment).</param>
    /// <param name="compressedLength">Length of the compressed stream, at least 1.</param>
    /// <param name="clusterBits">Cluster bits.</param>
    public static L2Entry Compressed(long hostOffset, int compressedLength, int clusterBits)
    {
        int x = CompressedOffsetBits(clusterBits);
        if (hostOffset < 0 || hostOffset >= Math.Min(1L << x, 1L << 56))
            throw new ArgumentOutOfRangeException(nameof(hostOffset), hostOffset, $"compressed offset must fit in {Math.Min(x, 56)} bits");
        if (compressedLength < 1) throw new ArgumentOutOfRangeException(nameof(compressedLength), compressedLength, "must be positive");
        long nsect = ((hostOffset + compressedLength - 1) >> 9) - (hostOffset >> 9);
        if (nsect >= 1L << (clusterBits - 8))
            throw new ArgumentOutOfRangeException(nameof(compressedLength), compressedLength, "compressed data spans more sectors than the entry can describe");
        return new L2Entry(CompressedFlag | ((ulong)nsect << x) | (ulong)hostOffset);
    }

    /// <summary>The same entry with COPIED set or cleared.</summary>
    /// <param name="copied">New COPIED value.</param>
    public L2Entry WithCopied(bool copied) => new(copied ? Word0 | CopiedFlag : Word0 & ~CopiedFlag, Bitmap);

    /// <inheritdoc/>
    public bool Equals(L2Entry other) => Word0 == other.Word0 && Bitmap == other.Bitmap;
    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is L2Entry e && Equals(e);
    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(Word0, Bitmap);
    /// <summary>Equality of both words.</summary>
    public static bool operator ==(L2Entry left, L2Entry right) => left.Equals(right);
    /// <summary>Inequality of either word.</summary>
    public static bool operator !=(L2Entry left, L2Entry right) => !left.Equals(right);
    /// <inheritdoc/>
    public override string ToString() => $"L2Entry(0x{Word0:X16}, 0x{Bitmap:X16})";
}
