using System.Buffers.Binary;

namespace Qcow2Actors.Format;

/// <summary>Decoding and the opener rules of the fixed header, in QEMU's order (see <see cref="Qcow2Rule"/>).</summary>
public sealed partial class Qcow2Header
{
    /// <summary>
    /// Decodes and validates the header at the start of <paramref name="data"/>, which must hold at
    /// least header_length bytes (72 for v2; the first 4 KiB of the file is enough for any header
    /// QEMU writes). Enforces opener rules 1-6, 8, 9, 12 (crypt_method range), 13, 14, 15 and 16 of
    /// FORMAT.md §2, except that unknown incompatible bits are left to
    /// <see cref="CheckIncompatibleFeatures"/> so they can be named from the feature name table.
    /// </summary>
    /// <param name="data">Bytes from file offset 0.</param>
    /// <param name="profile">Who reads (see <see cref="ValidationProfile"/>); outside <see cref="ValidationProfile.Open"/> bytes missing after the first 104 read as zeros.</param>
    /// <exception cref="Qcow2FormatException">The header is malformed or uses something QEMU refuses.</exception>
    public static Qcow2Header Read(ReadOnlySpan<byte> data, ValidationProfile profile = ValidationProfile.Open)
    {
        var h = ReadFixed(data, profile);
        h.ValidateLayout(profile);
        return h;
    }

    // The raw values of the fields ValidateLayout judges, kept between the two halves of a read so
    // the extension parser can run in between, where QEMU parses them.
    private RawLayout _raw;

    private readonly record struct RawLayout(
        ulong Size, uint L1Size, ulong L1Offset, ulong RefcountTableOffset, uint RefcountTableClusters,
        uint NbSnapshots, ulong SnapshotsOffset, uint RefcountOrder, uint BackingSize);

    /// <summary>
    /// First half of a read, in QEMU's order: magic, version, cluster_bits, header_length, the
    /// backing file offset, crypt_method and the compression type. Everything the extension
    /// parser needs is decided here; the table layout is judged by <see cref="ValidateLayout"/>.
    /// </summary>
    internal static Qcow2Header ReadFixed(ReadOnlySpan<byte> data, ValidationProfile profile)
    {
        if (data.Length < V2HeaderLength)
            throw new Qcow2FormatException(Qcow2Rule.HeaderTruncated, "header", 0, $"needs at least {V2HeaderLength} bytes, got {data.Length}", (ulong)data.Length);
        uint magic = BinaryPrimitives.ReadUInt32BigEndian(data[MagicOffset..]);
        if (magic != Magic)
            throw new Qcow2FormatException(Qcow2Rule.BadMagic, "magic", MagicOffset, $"0x{magic:X8} is not the qcow2 magic 0x{Magic:X8}", magic);
        uint version = BinaryPrimitives.ReadUInt32BigEndian(data[VersionOffset..]);
        if (version is not (2 or 3))
            throw new Qcow2FormatException(Qcow2Rule.UnsupportedVersion, "version", VersionOffset, $"{version} is not 2 or 3", version);

        uint clusterBits = BinaryPrimitives.ReadUInt32BigEndian(data[ClusterBitsOffset..]);
        if (clusterBits is < MinClusterBits or > MaxClusterBits)
            throw new Qcow2FormatException(Qcow2Rule.ClusterBitsOutOfRange, "cluster_bits", ClusterBitsOffset,
                $"{clusterBits} is outside {MinClusterBits}..{MaxClusterBits} (512 B to 2 MiB clusters, QEMU's limit)", clusterBits);
        int clusterSize = 1 << (int)clusterBits;

        var h = new Qcow2Header
        {
            Version = (int)version,
            ClusterBits = (int)clusterBits,
        };

        uint order = 4;
        if (version == 2)
        {
            // Rule 3: bytes from 72 on are not fields in v2, whatever they contain.
            h.HeaderLength = V2HeaderLength;
        }
        else
        {
            if (data.Length < V3MinHeaderLength)
                throw new Qcow2FormatException(Qcow2Rule.HeaderLengthTooShort, "header", 0, $"a version 3 header needs at least {V3MinHeaderLength} bytes, got {data.Length}", (ulong)data.Length);
            uint headerLength = BinaryPrimitives.ReadUInt32BigEndian(data[HeaderLengthOffset..]);
            if (headerLength < V3MinHeaderLength)
                throw new Qcow2FormatException(Qcow2Rule.HeaderLengthTooShort, "header_length", HeaderLengthOffset, $"{headerLength} is below the version 3 minimum of {V3MinHeaderLength}", headerLength);
            if (headerLength > (uint)clusterSize)
                throw new Qcow2FormatException(Qcow2Rule.HeaderLengthExceedsCluster, "header_length", HeaderLengthOffset, $"{headerLength} exceeds the cluster size {clusterSize}", headerLength);
            if (headerLength % 8 != 0)
                throw new Qcow2FormatException(Qcow2Rule.HeaderLengthUnaligned, "header_length", HeaderLengthOffset, $"{headerLength} is not a multiple of 8", headerLength);
            if (data.Length < headerLength)
            {
                if (profile == ValidationProfile.Open)
                    throw new Qcow2FormatException(Qcow2Rule.HeaderTruncated, "header_length", HeaderLengthOffset, $"{headerLength} bytes declared but only {data.Length} available", headerLength);
                // QEMU reads past the end of a file as zeros.
                var padded = new byte[headerLength];
                data.CopyTo(padded);
                data = padded;
            }
            h.HeaderLength = (int)headerLength;
            h.IncompatibleFeatures = (IncompatibleFeatures)BinaryPrimitives.ReadUInt64BigEndian(data[IncompatibleFeaturesOffset..]);
            h.CompatibleFeatures = (CompatibleFeatures)BinaryPrimitives.ReadUInt64BigEndian(data[CompatibleFeaturesOffset..]);
            h.AutoclearFeatures = (AutoclearFeatures)BinaryPrimitives.ReadUInt64BigEndian(data[AutoclearFeaturesOffset..]);
            order = BinaryPrimitives.ReadUInt32BigEndian(data[RefcountOrderOffset..]);
            byte ct = headerLength > CompressionTypeOffset ? data[CompressionTypeOffset] : (byte)0;
            h.CompressionType = (CompressionType)ct;
            if (headerLength > V3DefaultHeaderLength)
                h._unknownAdditionalFields = data[V3DefaultHeaderLength..(int)headerLength].ToArray();
        }

        ulong backingOffset = BinaryPrimitives.ReadUInt64BigEndian(data[BackingFileOffsetOffset..]);
        uint backingSize = BinaryPrimitives.ReadUInt32BigEndian(data[BackingFileSizeOffset..]);
        if (backingOffset > (ulong)clusterSize)
            throw new Qcow2FormatException(Qcow2Rule.BackingFileOffsetInvalid, "backing_file_offset", BackingFileOffsetOffset,
                $"{backingOffset} lies beyond cluster 0 (cluster size {clusterSize})", backingOffset);
        if (profile == ValidationProfile.Open)
        {
            if (backingOffset != 0 && backingOffset < (ulong)h.HeaderLength)
                throw new Qcow2FormatException(Qcow2Rule.BackingOverlapsHeader, "backing_file_offset", BackingFileOffsetOffset,
                    $"{backingOffset} overlaps the {h.HeaderLength}-byte header", backingOffset);
            if (backingOffset != 0 && (h.AutoclearFeatures & AutoclearFeatures.RawExternalData) != 0)
                throw new Qcow2FormatException(Qcow2Rule.RawDataWithBacking, "autoclear_features", AutoclearFeaturesOffset,
                    "autoclear bit 1 (raw external data) cannot be combined with a backing file", (ulong)h.AutoclearFeatures);
            // Without an offset the size is meaningless, but an absurd one suggests garbage.
            if (backingOffset == 0 && backingSize > MaxBackingFileNameLength)
                throw new Qcow2FormatException(Qcow2Rule.BackingFileNameTooLong, "backing_file_size", BackingFileSizeOffset,
                    $"{backingSize} exceeds {MaxBackingFileNameLength}", backingSize);
        }
        h.BackingFileOffset = (long)backingOffset;
        h.BackingFileSize = (int)Math.Min(backingSize, int.MaxValue);

        uint crypt = BinaryPrimitives.ReadUInt32BigEndian(data[CryptMethodOffset..]);
        if (crypt > (uint)CryptMethod.Luks)
            throw new Qcow2FormatException(Qcow2Rule.CryptMethodUnknown, "crypt_method", CryptMethodOffset, $"unknown encryption method {crypt}", crypt);
        h.CryptMethod = (CryptMethod)crypt;

        if (h.Version == 3)
        {
            byte ct = (byte)h.CompressionType;
            bool ctBit = (h.IncompatibleFeatures & IncompatibleFeatures.CompressionType) != 0;
            if (ct > (byte)CompressionType.Zstd)
                throw new Qcow2FormatException(Qcow2Rule.CompressionTypeUnknown, "compression_type", CompressionTypeOffset, $"unknown compression type {ct}", ct);
            if (ctBit && ct == 0)
                throw new Qcow2FormatException(Qcow2Rule.CompressionBitWithoutType, "compression_type", CompressionTypeOffset,
                    "incompatible bit 3 (compression type) is set but the compression type is zlib or absent", ct);
            if (!ctBit && ct != 0)
                throw new Qcow2FormatException(Qcow2Rule.CompressionTypeWithoutBit, "compression_type", CompressionTypeOffset,
                    $"compression type {ct} requires incompatible bit 3 (compression type)", ct);
        }

        h._raw = new RawLayout(
            Size: BinaryPrimitives.ReadUInt64BigEndian(data[SizeOffset..]),
            L1Size: BinaryPrimitives.ReadUInt32BigEndian(data[L1SizeOffset..]),
            L1Offset: BinaryPrimitives.ReadUInt64BigEndian(data[L1TableOffsetOffset..]),
            RefcountTableOffset: BinaryPrimitives.ReadUInt64BigEndian(data[RefcountTableOffsetOffset..]),
            RefcountTableClusters: BinaryPrimitives.ReadUInt32BigEndian(data[RefcountTableClustersOffset..]),
            NbSnapshots: BinaryPrimitives.ReadUInt32BigEndian(data[NbSnapshotsOffset..]),
            SnapshotsOffset: BinaryPrimitives.ReadUInt64BigEndian(data[SnapshotsOffsetOffset..]),
            RefcountOrder: order,
            BackingSize: backingSize);
        h.RefcountOrder = (int)Math.Min(order, int.MaxValue);
        return h;
    }

    /// <summary>
    /// Second half of a read, after the extensions (QEMU's order): refcount_order, extended L2
    /// cluster size, raw external data, then the refcount table, snapshot table and L1 table
    /// (aligned, within QEMU's limits, no overflow), the size against the L1 table, and the
    /// backing file name's length.
    /// </summary>
    internal void ValidateLayout(ValidationProfile profile)
    {
        var r = _raw;
        int clusterSize = ClusterSize;
        if (r.RefcountOrder > MaxRefcountOrder)
            throw new Qcow2FormatException(Qcow2Rule.RefcountOrderTooLarge, "refcount_order", RefcountOrderOffset, $"{r.RefcountOrder} exceeds {MaxRefcountOrder} (refcounts are at most 64 bits)", r.RefcountOrder);
        if (HasExtendedL2 && ClusterBits < MinExtendedL2ClusterBits)
            throw new Qcow2FormatException(Qcow2Rule.ExtendedL2ClusterTooSmall, "cluster_bits", ClusterBitsOffset,
                $"{ClusterBits} is below {MinExtendedL2ClusterBits}, the minimum with extended L2 entries", (ulong)ClusterBits);
        if ((AutoclearFeatures & AutoclearFeatures.RawExternalData) != 0 && !HasExternalDataFile)
            throw new Qcow2FormatException(Qcow2Rule.RawDataWithoutDataFile, "autoclear_features", AutoclearFeaturesOffset,
                "autoclear bit 1 (raw external data) requires incompatible bit 2 (external data file)", (ulong)AutoclearFeatures);

        // Refcount table: with BDRV_O_CHECK QEMU opens an image without one, so check can count what is left.
        if (r.RefcountTableClusters == 0 && profile != ValidationProfile.Check)
            throw new Qcow2FormatException(Qcow2Rule.NoRefcountTable, "refcount_table_clusters", RefcountTableClustersOffset, "0: the image has no refcount table");
        if ((ulong)r.RefcountTableClusters << ClusterBits > MaxRefcountTableBytes)
            throw new Qcow2FormatException(Qcow2Rule.RefcountTableTooLarge, "refcount_table_clusters", RefcountTableClustersOffset,
                $"{r.RefcountTableClusters} clusters exceed QEMU's refcount table limit of {MaxRefcountTableBytes} bytes", r.RefcountTableClusters);
        RefcountTableClusters = (int)r.RefcountTableClusters;
        RefcountTableOffset = CheckTableOffset(Qcow2Rule.RefcountTableOffsetInvalid, "refcount_table_offset", RefcountTableOffsetOffset,
            r.RefcountTableOffset, (ulong)r.RefcountTableClusters << ClusterBits, clusterSize);

        // Snapshot table: the checker judges it itself (and counts a bad one as corruption).
        if (profile != ValidationProfile.Check)
        {
            if (r.NbSnapshots > MaxSnapshots)
                throw new Qcow2FormatException(Qcow2Rule.SnapshotTableTooLarge, "nb_snapshots", NbSnapshotsOffset, $"{r.NbSnapshots} snapshots exceed QEMU's limit of {MaxSnapshots}", r.NbSnapshots);
            SnapshotsOffset = CheckTableOffset(Qcow2Rule.SnapshotTableOffsetInvalid, "snapshots_offset", SnapshotsOffsetOffset,
                r.SnapshotsOffset, (ulong)r.NbSnapshots * SnapshotHeaderSize, clusterSize);
        }
        else
        {
            SnapshotsOffset = (long)r.SnapshotsOffset;
        }
        NbSnapshots = (int)Math.Min(r.NbSnapshots, int.MaxValue);

        if (r.L1Size > MaxL1Size)
            throw new Qcow2FormatException(Qcow2Rule.L1TableTooLarge, "l1_size", L1SizeOffset, $"{r.L1Size} entries exceed QEMU's limit of {MaxL1Size}", r.L1Size);
        L1Size = (int)r.L1Size;
        L1TableOffset = CheckTableOffset(Qcow2Rule.L1TableOffsetInvalid, "l1_table_offset", L1TableOffsetOffset, r.L1Offset, (ulong)r.L1Size * 8, clusterSize);

        int shift = ClusterBits + ClusterBits - (HasExtendedL2 ? 4 : 3);
        ulong needed = (r.Size >> shift) + ((r.Size & ((1UL << shift) - 1)) != 0 ? 1UL : 0UL);
        if (r.Size > long.MaxValue || needed > int.MaxValue)
            throw new Qcow2FormatException(Qcow2Rule.ImageTooBig, "size", SizeOffset, $"{r.Size} bytes need {needed} L1 entries, more than QEMU can address", r.Size);
        Size = (long)r.Size;
        if (r.L1Size < needed)
            throw new Qcow2FormatException(Qcow2Rule.L1TableTooSmall, "l1_size", L1SizeOffset, $"{r.L1Size} entries cannot map the virtual size {r.Size}, which needs {needed}", r.L1Size);

        if (BackingFileOffset != 0)
        {
            long limit = Math.Min(MaxBackingFileNameLength, clusterSize - BackingFileOffset);
            if (r.BackingSize > limit)
                throw new Qcow2FormatException(Qcow2Rule.BackingFileNameTooLong, "backing_file_size", BackingFileSizeOffset,
                    $"{r.BackingSize} bytes exceed the limit of {limit} (name must be at most {MaxBackingFileNameLength} bytes and inside cluster 0)", r.BackingSize);
        }
    }

    private static long CheckTableOffset(Qcow2Rule rule, string field, int at, ulong offset, ulong length, int clusterSize)
    {
        if ((offset & (ulong)(clusterSize - 1)) != 0)
            throw new Qcow2FormatException(rule, field, at, $"0x{offset:X} is not aligned to the cluster size {clusterSize}", offset);
        if (offset > long.MaxValue || length > (ulong)long.MaxValue - offset)
            throw new Qcow2FormatException(rule, field, at, $"0x{offset:X} plus the table length {length} exceeds INT64_MAX", offset);
        return (long)offset;
    }

    /// <summary>
    /// Refuses incompatible feature bits outside <paramref name="supported"/> (opener rule 6). The
    /// lowest such bit is reported, with its name from <paramref name="names"/> when the image has one;
    /// the exception also lists every unsupported bit's name in table order, as QEMU prints them.
    /// </summary>
    /// <param name="supported">Bits the caller implements; QEMU's view is <see cref="IncompatibleFeatures.KnownToQemu"/>.</param>
    /// <param name="names">The image's feature name table, if any.</param>
    /// <exception cref="Qcow2FormatException">An unsupported bit is set.</exception>
    public void CheckIncompatibleFeatures(IncompatibleFeatures supported, FeatureNameTable? names = null)
    {
        ulong unknown = (ulong)IncompatibleFeatures & ~(ulong)supported;
        if (unknown == 0) return;
        int bit = System.Numerics.BitOperations.TrailingZeroCount(unknown);
        string? name = names?.Lookup(FeatureType.Incompatible, (byte)bit);
        string problem = name is null
            ? $"unsupported incompatible feature bit {bit}"
            : $"unsupported incompatible feature bit {bit} ({name})";
        var named = new List<string>();
        ulong unnamed = unknown;
        foreach (var e in names?.Entries ?? [])
        {
            if (e.Type != FeatureType.Incompatible || e.Bit >= 64 || (unnamed & (1UL << e.Bit)) == 0) continue;
            named.Add(e.Name);
            unnamed &= ~(1UL << e.Bit);
        }
        throw new Qcow2FormatException(Qcow2Rule.UnsupportedIncompatibleFeature, "incompatible_features", IncompatibleFeaturesOffset, problem, unnamed)
        {
            FeatureNames = named,
        };
    }
}
