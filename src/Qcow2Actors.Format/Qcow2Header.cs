using System.Buffers.Binary;

namespace Qcow2Actors.Format;

/// <summary>
/// The fixed qcow2 header (FORMAT.md §2): bytes 0-71 for version 2, 0 to header_length for
/// version 3. <see cref="Read"/> enforces every opener rule the header bytes alone can decide;
/// rules needing the extensions (unknown incompatible bits named from the feature table, LUKS
/// vs FDE, extension overruns) are checked by <see cref="ImageHeaderBlock"/>. Decoding and its
/// rules live in Qcow2Header.Read.cs; this file holds the layout, the derived values and the encoder.
/// </summary>
public sealed partial class Qcow2Header
{
    /// <summary>The magic number "QFI\xFB".</summary>
    public const uint Magic = 0x514649FB;
    /// <summary>Offset of the magic (u32).</summary>
    public const int MagicOffset = 0;
    /// <summary>Offset of version (u32).</summary>
    public const int VersionOffset = 4;
    /// <summary>Offset of backing_file_offset (u64).</summary>
    public const int BackingFileOffsetOffset = 8;
    /// <summary>Offset of backing_file_size (u32).</summary>
    public const int BackingFileSizeOffset = 16;
    /// <summary>Offset of cluster_bits (u32).</summary>
    public const int ClusterBitsOffset = 20;
    /// <summary>Offset of size (u64, virtual disk size in bytes).</summary>
    public const int SizeOffset = 24;
    /// <summary>Offset of crypt_method (u32).</summary>
    public const int CryptMethodOffset = 32;
    /// <summary>Offset of l1_size (u32).</summary>
    public const int L1SizeOffset = 36;
    /// <summary>Offset of l1_table_offset (u64).</summary>
    public const int L1TableOffsetOffset = 40;
    /// <summary>Offset of refcount_table_offset (u64).</summary>
    public const int RefcountTableOffsetOffset = 48;
    /// <summary>Offset of refcount_table_clusters (u32).</summary>
    public const int RefcountTableClustersOffset = 56;
    /// <summary>Offset of nb_snapshots (u32).</summary>
    public const int NbSnapshotsOffset = 60;
    /// <summary>Offset of snapshots_offset (u64). Bytes 60-71 are rewritten together when a snapshot table is replaced.</summary>
    public const int SnapshotsOffsetOffset = 64;
    /// <summary>Offset of incompatible_features (u64, v3).</summary>
    public const int IncompatibleFeaturesOffset = 72;
    /// <summary>Offset of compatible_features (u64, v3).</summary>
    public const int CompatibleFeaturesOffset = 80;
    /// <summary>Offset of autoclear_features (u64, v3).</summary>
    public const int AutoclearFeaturesOffset = 88;
    /// <summary>Offset of refcount_order (u32, v3).</summary>
    public const int RefcountOrderOffset = 96;
    /// <summary>Offset of header_length (u32, v3).</summary>
    public const int HeaderLengthOffset = 100;
    /// <summary>Offset of compression_type (u8, additional field, present when header_length &gt; 104).</summary>
    public const int CompressionTypeOffset = 104;
    /// <summary>Header length of version 2 images (fixed).</summary>
    public const int V2HeaderLength = 72;
    /// <summary>Smallest header_length a v3 image may declare.</summary>
    public const int V3MinHeaderLength = 104;
    /// <summary>Header length QEMU 5.1+ writes for v3 (compression_type plus padding).</summary>
    public const int V3DefaultHeaderLength = 112;
    /// <summary>Smallest cluster_bits (512-byte clusters).</summary>
    public const int MinClusterBits = 9;
    /// <summary>Largest cluster_bits QEMU opens (2 MiB clusters).</summary>
    public const int MaxClusterBits = 21;
    /// <summary>Smallest cluster_bits allowed with extended L2 entries.</summary>
    public const int MinExtendedL2ClusterBits = 14;
    /// <summary>Largest refcount_order (64-bit refcounts).</summary>
    public const int MaxRefcountOrder = 6;
    /// <summary>QEMU's limit on l1_size (32 MiB of 8-byte entries).</summary>
    public const int MaxL1Size = 32 * 1024 * 1024 / 8;
    /// <summary>QEMU's limit on the refcount table in bytes.</summary>
    public const long MaxRefcountTableBytes = 8 * 1024 * 1024;
    /// <summary>QEMU's limit on nb_snapshots.</summary>
    public const int MaxSnapshots = 65536;
    /// <summary>QEMU's limit on the backing file name length.</summary>
    public const int MaxBackingFileNameLength = 1023;
    /// <summary>Size of a snapshot table entry's fixed part; QEMU bounds snapshots_offset with it.</summary>
    internal const int SnapshotHeaderSize = 40;

    private byte[] _unknownAdditionalFields = [];

    /// <summary>Format version, 2 or 3.</summary>
    public int Version { get; set; } = 3;
    /// <summary>Offset of the backing file name in cluster 0, or 0 when there is no backing file.</summary>
    public long BackingFileOffset { get; set; }
    /// <summary>Length in bytes of the backing file name.</summary>
    public int BackingFileSize { get; set; }
    /// <summary>log2 of the cluster size (9..21).</summary>
    public int ClusterBits { get; set; } = 16;
    /// <summary>Virtual disk size in bytes.</summary>
    public long Size { get; set; }
    /// <summary>Encryption method.</summary>
    public CryptMethod CryptMethod { get; set; }
    /// <summary>Number of entries in the active L1 table.</summary>
    public int L1Size { get; set; }
    /// <summary>Host offset of the active L1 table (cluster aligned).</summary>
    public long L1TableOffset { get; set; }
    /// <summary>Host offset of the refcount table (cluster aligned).</summary>
    public long RefcountTableOffset { get; set; }
    /// <summary>Length of the refcount table in clusters.</summary>
    public int RefcountTableClusters { get; set; }
    /// <summary>Number of internal snapshots.</summary>
    public int NbSnapshots { get; set; }
    /// <summary>Host offset of the snapshot table (cluster aligned).</summary>
    public long SnapshotsOffset { get; set; }
    /// <summary>Incompatible feature bits (always 0 for v2).</summary>
    public IncompatibleFeatures IncompatibleFeatures { get; set; }
    /// <summary>Compatible feature bits (always 0 for v2); unknown bits are kept.</summary>
    public CompatibleFeatures CompatibleFeatures { get; set; }
    /// <summary>Autoclear feature bits (always 0 for v2).</summary>
    public AutoclearFeatures AutoclearFeatures { get; set; }
    /// <summary>log2 of the refcount width in bits (0..6; v2 implies 4).</summary>
    public int RefcountOrder { get; set; } = 4;
    /// <summary>Header length in bytes: 72 for v2; for v3 at least 104, a multiple of 8.</summary>
    public int HeaderLength { get; set; } = V3DefaultHeaderLength;
    /// <summary>Compression type (additional field at byte 104; zlib when absent).</summary>
    public CompressionType CompressionType { get; set; }

    /// <summary>
    /// Bytes 112 to header_length that this version does not understand, kept verbatim so a header
    /// rewrite does not drop fields a newer writer added. Empty when header_length ≤ 112.
    /// </summary>
    public byte[] UnknownAdditionalFields
    {
        get => _unknownAdditionalFields;
        set => _unknownAdditionalFields = value ?? [];
    }

    /// <summary>Cluster size in bytes.</summary>
    public int ClusterSize => 1 << ClusterBits;
    /// <summary>Refcount entry width in bits (1..64).</summary>
    public int RefcountBits => 1 << RefcountOrder;
    /// <summary>Refcount entries per refcount block.</summary>
    public long RefcountBlockEntries => (long)ClusterSize * 8 / RefcountBits;
    /// <summary>Entries (u64) in the refcount table.</summary>
    public long RefcountTableEntries => (long)RefcountTableClusters * ClusterSize / 8;
    /// <summary>True when L2 entries are 128 bits with subcluster bitmaps (incompatible bit 4).</summary>
    public bool HasExtendedL2 => (IncompatibleFeatures & IncompatibleFeatures.ExtendedL2) != 0;
    /// <summary>Bytes per L2 entry: 16 with extended L2 entries, else 8.</summary>
    public int L2EntrySize => HasExtendedL2 ? 16 : 8;
    /// <summary>Entries per L2 table (an L2 table is always one cluster).</summary>
    public int L2Entries => ClusterSize / L2EntrySize;
    /// <summary>Guest bytes covered by one L2 table.</summary>
    public long BytesPerL2Table => (long)ClusterSize * L2Entries;
    /// <summary>Subcluster size: cluster_size / 32 with extended L2 entries, else the cluster size.</summary>
    public int SubclusterSize => HasExtendedL2 ? ClusterSize / L2Entry.SubclustersPerCluster : ClusterSize;
    /// <summary>Dirty bit (incompatible bit 0).</summary>
    public bool IsDirty => (IncompatibleFeatures & IncompatibleFeatures.Dirty) != 0;
    /// <summary>Corrupt bit (incompatible bit 1).</summary>
    public bool IsCorrupt => (IncompatibleFeatures & IncompatibleFeatures.Corrupt) != 0;
    /// <summary>External data file (incompatible bit 2).</summary>
    public bool HasExternalDataFile => (IncompatibleFeatures & IncompatibleFeatures.ExternalDataFile) != 0;
    /// <summary>Qcow2Actors' journal-pending bit (incompatible bit 63).</summary>
    public bool IsJournalPending => (IncompatibleFeatures & IncompatibleFeatures.JournalPending) != 0;
    /// <summary>Lazy refcounts (compatible bit 0).</summary>
    public bool HasLazyRefcounts => (CompatibleFeatures & CompatibleFeatures.LazyRefcounts) != 0;
    /// <summary>True when a backing file is named.</summary>
    public bool HasBackingFile => BackingFileOffset != 0;
    /// <summary>Smallest l1_size that covers <see cref="Size"/> (opener rule 16); also where VM state starts, in L1 entries.</summary>
    public long MinL1Size => RequiredL1Size(Size, ClusterBits, HasExtendedL2);

    /// <summary>Entries an L1 table needs to map <paramref name="size"/> guest bytes.</summary>
    /// <param name="size">Virtual size in bytes.</param>
    /// <param name="clusterBits">log2 of the cluster size.</param>
    /// <param name="extendedL2">Whether L2 entries are 16 bytes.</param>
    public static long RequiredL1Size(long size, int clusterBits, bool extendedL2)
    {
        int shift = clusterBits + clusterBits - (extendedL2 ? 4 : 3);
        ulong perL2 = 1UL << shift;
        return (long)(((ulong)size + perL2 - 1) >> shift);
    }

    /// <summary>
    /// Builds the header of a new, empty image the way qemu-img create would, with the table
    /// offsets left at 0 for the caller to fill in once it has laid out the clusters.
    /// </summary>
    /// <param name="size">Virtual size in bytes.</param>
    /// <param name="clusterBits">log2 of the cluster size (9..21; ≥ 14 with extended L2).</param>
    /// <param name="version">2 or 3.</param>
    /// <param name="refcountOrder">log2 of the refcount width; must be 4 for v2.</param>
    /// <param name="extendedL2">Use 128-bit L2 entries (v3 only).</param>
    /// <param name="compressionType">Compression type (v3 only for zstd).</param>
    /// <param name="lazyRefcounts">Set compatible bit 0 (v3 only).</param>
    public static Qcow2Header CreateNew(long size, int clusterBits = 16, int version = 3, int refcountOrder = 4,
        bool extendedL2 = false, CompressionType compressionType = CompressionType.Zlib, bool lazyRefcounts = false)
    {
        if (version is not (2 or 3)) throw new ArgumentOutOfRangeException(nameof(version), version, "version must be 2 or 3");
        if (clusterBits is < MinClusterBits or > MaxClusterBits)
            throw new ArgumentOutOfRangeException(nameof(clusterBits), clusterBits, "cluster_bits must be 9..21");
        if (refcountOrder is < 0 or > MaxRefcountOrder)
            throw new ArgumentOutOfRangeException(nameof(refcountOrder), refcountOrder, "refcount_order must be 0..6");
        if (size < 0) throw new ArgumentOutOfRangeException(nameof(size), size, "size must not be negative");
        if (version == 2 && (refcountOrder != 4 || extendedL2 || compressionType != CompressionType.Zlib || lazyRefcounts))
            throw new ArgumentException("version 2 supports only 16-bit refcounts, standard L2 entries, zlib and no lazy refcounts");
        if (extendedL2 && clusterBits < MinExtendedL2ClusterBits)
            throw new ArgumentOutOfRangeException(nameof(clusterBits), clusterBits, "extended L2 entries need cluster_bits >= 14");
        long l1 = RequiredL1Size(size, clusterBits, extendedL2);
        if (l1 > MaxL1Size) throw new ArgumentOutOfRangeException(nameof(size), size, $"needs {l1} L1 entries, above QEMU's limit of {MaxL1Size}");
        var incompat = IncompatibleFeatures.None;
        if (extendedL2) incompat |= IncompatibleFeatures.ExtendedL2;
        if (compressionType != CompressionType.Zlib) incompat |= IncompatibleFeatures.CompressionType;
        return new Qcow2Header
        {
            Version = version,
            ClusterBits = clusterBits,
            Size = size,
            L1Size = (int)l1,
            RefcountTableClusters = 1,
            RefcountOrder = refcountOrder,
            HeaderLength = version == 2 ? V2HeaderLength : V3DefaultHeaderLength,
            IncompatibleFeatures = incompat,
            CompatibleFeatures = lazyRefcounts ? CompatibleFeatures.LazyRefcounts : CompatibleFeatures.None,
            CompressionType = compressionType,
        };
    }

    /// <summary>The 8 bytes of incompatible_features (at <see cref="IncompatibleFeaturesOffset"/>), for a tool that flips one bit in place.</summary>
    /// <param name="features">The new value.</param>
    public static byte[] EncodeIncompatibleFeatures(IncompatibleFeatures features)
    {
        var bytes = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(bytes, (ulong)features);
        return bytes;
    }

    /// <summary>
    /// The 12 bytes from <see cref="RefcountTableOffsetOffset"/>: refcount_table_offset and
    /// refcount_table_clusters, which one sector write switches together.
    /// </summary>
    /// <param name="tableOffset">Cluster-aligned offset of the refcount table.</param>
    /// <param name="tableClusters">Its length in clusters.</param>
    public static byte[] EncodeRefcountTablePointer(long tableOffset, int tableClusters)
    {
        var bytes = new byte[12];
        BinaryPrimitives.WriteUInt64BigEndian(bytes, (ulong)tableOffset);
        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(8), (uint)tableClusters);
        return bytes;
    }

    /// <summary>True when <paramref name="first"/> (the file's first bytes) starts with the qcow2 magic, as qemu-img probes.</summary>
    /// <param name="first">The first bytes of the file.</param>
    public static bool HasMagic(ReadOnlySpan<byte> first) =>
        first.Length >= MagicOffset + 4 && BinaryPrimitives.ReadUInt32BigEndian(first[MagicOffset..]) == Magic;

    /// <summary>
    /// The incompatible feature bits of a v3 header, read without validating anything else: for a
    /// quick look at a file another process may be writing (is a journal pending?). False when
    /// <paramref name="first"/> is not a qcow2 v3 header or is too short to hold the field.
    /// </summary>
    /// <param name="first">The file's first bytes.</param>
    /// <param name="features">The bits, when the result is true.</param>
    public static bool TryPeekIncompatibleFeatures(ReadOnlySpan<byte> first, out IncompatibleFeatures features)
    {
        features = 0;
        if (!HasMagic(first) || first.Length < IncompatibleFeaturesOffset + 8
            || BinaryPrimitives.ReadInt32BigEndian(first[VersionOffset..]) < 3)
            return false;
        features = (IncompatibleFeatures)BinaryPrimitives.ReadUInt64BigEndian(first[IncompatibleFeaturesOffset..]);
        return true;
    }

    /// <summary>
    /// How many bytes from offset 0 a reader should pass to <see cref="ImageHeaderBlock.Read"/>: the
    /// cluster size when <paramref name="first"/> (the file's first bytes, at least 24 of them) names a
    /// valid one, else just what was given (the read will then report the rule the header breaks).
    /// </summary>
    /// <param name="first">The first bytes of the file.</param>
    public static int Cluster0Length(ReadOnlySpan<byte> first)
    {
        if (first.Length < ClusterBitsOffset + 4) return first.Length;
        uint bits = BinaryPrimitives.ReadUInt32BigEndian(first[ClusterBitsOffset..]);
        return bits is >= MinClusterBits and <= MaxClusterBits ? 1 << (int)bits : first.Length;
    }

    /// <summary>A deep copy (the unknown additional-field bytes are copied too).</summary>
    public Qcow2Header Clone()
    {
        var copy = (Qcow2Header)MemberwiseClone();
        copy._unknownAdditionalFields = (byte[])_unknownAdditionalFields.Clone();
        return copy;
    }

    /// <summary>
    /// Encodes the header into exactly <see cref="HeaderLength"/> bytes (72 for v2). v3 fields and
    /// additional fields are written only for v3; padding bytes 105-111 are zero.
    /// </summary>
    /// <param name="destination">At least <see cref="HeaderLength"/> bytes.</param>
    /// <returns>The number of bytes written.</returns>
    public int Write(Span<byte> destination)
    {
        int length = Version == 2 ? V2HeaderLength : HeaderLength;
        if (Version is not (2 or 3)) throw new InvalidOperationException($"version {Version} cannot be written");
        if (Version == 2 && (IncompatibleFeatures != 0 || CompatibleFeatures != 0 || AutoclearFeatures != 0
                || RefcountOrder != 4 || CompressionType != CompressionType.Zlib))
            throw new InvalidOperationException("a version 2 header cannot store feature bits, a refcount order other than 4 or a compression type");
        if (Version == 3 && (length < V3MinHeaderLength || length % 8 != 0))
            throw new InvalidOperationException($"header_length {length} is not a valid version 3 header length");
        if (Version == 3 && length <= CompressionTypeOffset && CompressionType != CompressionType.Zlib)
            throw new InvalidOperationException("a compression type other than zlib needs header_length of at least 112");
        if (Version == 3 && _unknownAdditionalFields.Length != Math.Max(0, length - V3DefaultHeaderLength))
            throw new InvalidOperationException(
                $"header_length {length} does not match {_unknownAdditionalFields.Length} unknown additional-field bytes kept from the original header");
        if (destination.Length < length)
            throw new ArgumentException($"the header needs {length} bytes, the destination has {destination.Length}", nameof(destination));

        var d = destination[..length];
        d.Clear();
        BinaryPrimitives.WriteUInt32BigEndian(d[MagicOffset..], Magic);
        BinaryPrimitives.WriteUInt32BigEndian(d[VersionOffset..], (uint)Version);
        BinaryPrimitives.WriteUInt64BigEndian(d[BackingFileOffsetOffset..], (ulong)BackingFileOffset);
        BinaryPrimitives.WriteUInt32BigEndian(d[BackingFileSizeOffset..], (uint)BackingFileSize);
        BinaryPrimitives.WriteUInt32BigEndian(d[ClusterBitsOffset..], (uint)ClusterBits);
        BinaryPrimitives.WriteUInt64BigEndian(d[SizeOffset..], (ulong)Size);
        BinaryPrimitives.WriteUInt32BigEndian(d[CryptMethodOffset..], (uint)CryptMethod);
        BinaryPrimitives.WriteUInt32BigEndian(d[L1SizeOffset..], (uint)L1Size);
        BinaryPrimitives.WriteUInt64BigEndian(d[L1TableOffsetOffset..], (ulong)L1TableOffset);
        BinaryPrimitives.WriteUInt64BigEndian(d[RefcountTableOffsetOffset..], (ulong)RefcountTableOffset);
        BinaryPrimitives.WriteUInt32BigEndian(d[RefcountTableClustersOffset..], (uint)RefcountTableClusters);
        BinaryPrimitives.WriteUInt32BigEndian(d[NbSnapshotsOffset..], (uint)NbSnapshots);
        BinaryPrimitives.WriteUInt64BigEndian(d[SnapshotsOffsetOffset..], (ulong)SnapshotsOffset);
        if (Version == 3)
        {
            BinaryPrimitives.WriteUInt64BigEndian(d[IncompatibleFeaturesOffset..], (ulong)IncompatibleFeatures);
            BinaryPrimitives.WriteUInt64BigEndian(d[CompatibleFeaturesOffset..], (ulong)CompatibleFeatures);
            BinaryPrimitives.WriteUInt64BigEndian(d[AutoclearFeaturesOffset..], (ulong)AutoclearFeatures);
            BinaryPrimitives.WriteUInt32BigEndian(d[RefcountOrderOffset..], (uint)RefcountOrder);
            BinaryPrimitives.WriteUInt32BigEndian(d[HeaderLengthOffset..], (uint)length);
            if (length > CompressionTypeOffset) d[CompressionTypeOffset] = (byte)CompressionType;
            _unknownAdditionalFields.CopyTo(d[Math.Min(length, V3DefaultHeaderLength)..]);
        }
        return length;
    }
}
