using System.Buffers.Binary;
using System.Text;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Info;

/// <summary>One internal snapshot as the snapshot table stores it.</summary>
/// <param name="Id">Unique ID string (decimal in practice).</param>
/// <param name="Name">Snapshot name (tag).</param>
/// <param name="L1TableOffset">Host offset of the snapshot's L1 table.</param>
/// <param name="L1Size">Entries in the snapshot's L1 table.</param>
/// <param name="VmStateSize">Saved VM state size in bytes (the 64-bit extra field when present).</param>
/// <param name="DateSeconds">Creation time, seconds since the epoch.</param>
/// <param name="DateNanoseconds">Creation time, nanosecond part.</param>
/// <param name="VmClockNanoseconds">Guest run time at creation, in nanoseconds.</param>
/// <param name="Icount">Instruction count, or -1 when the entry does not record one.</param>
/// <param name="ExtraDataSize">extra_data_size as stored; v3 requires at least 16.</param>
public sealed record SnapshotInfo(
    string Id, string Name, ulong L1TableOffset, uint L1Size, ulong VmStateSize,
    uint DateSeconds, uint DateNanoseconds, ulong VmClockNanoseconds, long Icount, uint ExtraDataSize);

/// <summary>One persistent dirty bitmap from the bitmap directory.</summary>
/// <param name="Name">Bitmap name.</param>
/// <param name="Granularity">Bytes of guest data per bit.</param>
/// <param name="Flags">Directory flags: bit 0 in-use, bit 1 auto.</param>
/// <param name="TableOffset">Host offset of the bitmap table.</param>
/// <param name="TableSize">Entries in the bitmap table.</param>
public sealed record BitmapInfo(string Name, long Granularity, uint Flags, ulong TableOffset, uint TableSize);

/// <summary>
/// Everything an opener learns from cluster 0 and the tables it points to directly
/// (header, extensions, snapshot table, bitmap directory), decoded with the same
/// acceptance rules as QEMU's opener so that `q2a info` and `q2a check` refuse what
/// qemu-img refuses. Every read is bounded by a limit QEMU also enforces, so a hostile
/// header can never make us allocate from an unchecked size.
/// </summary>
internal sealed class ImageMetadata
{
    // Field offsets, type codes and QEMU's limits are Format's named constants; what stays here
    // is QEMU's acceptance order and its refusal wording, which `q2a info`/`check` must echo.
    private const long MaxL1Bytes = Qcow2Header.MaxL1Size * 8L;
    private const int SnapshotHeaderSize = SnapshotEntry.FixedSize;

    public required int Version { get; init; }
    public required int ClusterBits { get; init; }
    public long ClusterSize => 1L << ClusterBits;
    public required ulong VirtualSize { get; init; }
    public required uint CryptMethod { get; init; }
    public required uint L1Size { get; init; }
    public required ulong L1TableOffset { get; init; }
    public required ulong RefcountTableOffset { get; init; }
    public required uint RefcountTableClusters { get; init; }
    public required uint SnapshotCount { get; init; }
    public required ulong SnapshotsOffset { get; init; }
    public required ulong Incompatible { get; init; }
    public required ulong Compatible { get; init; }
    public required ulong Autoclear { get; init; }
    public required int RefcountOrder { get; init; }
    public int RefcountBits => 1 << RefcountOrder;
    public required uint HeaderLength { get; init; }
    public required int CompressionType { get; init; }
    public string? BackingFile { get; init; }
    public string? BackingFormat { get; init; }
    public string? DataFile { get; init; }
    public IReadOnlyList<(int Type, int Bit, string Name)> FeatureNames { get; init; } = [];
    public uint BitmapCount { get; init; }
    public ulong BitmapDirectorySize { get; init; }
    public ulong BitmapDirectoryOffset { get; init; }
    public ulong FdeOffset { get; init; }
    public ulong FdeLength { get; init; }
    public IReadOnlyList<SnapshotInfo> Snapshots { get; set; } = [];
    /// <summary>Bytes the snapshot table spans (0 when there is none); QEMU refcounts exactly this range.</summary>
    public long SnapshotsSize { get; set; }

    public bool HasDataFile => (Incompatible & (ulong)IncompatibleFeatures.ExternalDataFile) != 0;
    public bool ExtendedL2 => (Incompatible & (ulong)IncompatibleFeatures.ExtendedL2) != 0;
    public int L2EntryBytes => ExtendedL2 ? 16 : 8;
    public long L2Entries => ClusterSize / L2EntryBytes;
    public long RefcountTableEntries => (long)RefcountTableClusters << (ClusterBits - 3);
    public bool BitmapsValid => (Autoclear & (ulong)AutoclearFeatures.Bitmaps) != 0 && BitmapCount > 0;

    /// <summary>
    /// Reads and validates the header and everything hanging off cluster 0.
    /// <paramref name="forCheck"/> relaxes what QEMU relaxes under BDRV_O_CHECK (a missing
    /// refcount table, and the snapshot table, which the checker reads itself).
    /// </summary>
    public static ImageMetadata Load(IBlockDevice device, bool forCheck)
    {
        Span<byte> h = stackalloc byte[Qcow2Header.V3DefaultHeaderLength];
        h.Clear();
        var got = device.Read(h, 0);
        if (got < Qcow2Header.V2HeaderLength) throw new Qcow2FormatException("magic", Qcow2Header.MagicOffset, "file too short for a qcow2 header");
        var magic = BinaryPrimitives.ReadUInt32BigEndian(h[Qcow2Header.MagicOffset..]);
        if (magic != Qcow2Header.Magic) throw new Qcow2FormatException("magic", Qcow2Header.MagicOffset, "Image is not in qcow2 format");
        var version = BinaryPrimitives.ReadInt32BigEndian(h[Qcow2Header.VersionOffset..]);
        if (version is < 2 or > 3) throw new Qcow2FormatException("version", Qcow2Header.VersionOffset, $"Unsupported qcow2 version {version}");
        var backingOffset = BinaryPrimitives.ReadUInt64BigEndian(h[Qcow2Header.BackingFileOffsetOffset..]);
        var backingSize = BinaryPrimitives.ReadUInt32BigEndian(h[Qcow2Header.BackingFileSizeOffset..]);
        var clusterBits = BinaryPrimitives.ReadInt32BigEndian(h[Qcow2Header.ClusterBitsOffset..]);
        if (clusterBits is < Qcow2Header.MinClusterBits or > Qcow2Header.MaxClusterBits)
            throw new Qcow2FormatException("cluster_bits", Qcow2Header.ClusterBitsOffset, $"Unsupported cluster size: 2^{clusterBits}");
        var clusterSize = 1L << clusterBits;
        var size = BinaryPrimitives.ReadUInt64BigEndian(h[Qcow2Header.SizeOffset..]);
        var crypt = BinaryPrimitives.ReadUInt32BigEndian(h[Qcow2Header.CryptMethodOffset..]);
        var l1Size = BinaryPrimitives.ReadUInt32BigEndian(h[Qcow2Header.L1SizeOffset..]);
        var l1Offset = BinaryPrimitives.ReadUInt64BigEndian(h[Qcow2Header.L1TableOffsetOffset..]);
        var rtOffset = BinaryPrimitives.ReadUInt64BigEndian(h[Qcow2Header.RefcountTableOffsetOffset..]);
        var rtClusters = BinaryPrimitives.ReadUInt32BigEndian(h[Qcow2Header.RefcountTableClustersOffset..]);
        var nbSnapshots = BinaryPrimitives.ReadUInt32BigEndian(h[Qcow2Header.NbSnapshotsOffset..]);
        var snapshotsOffset = BinaryPrimitives.ReadUInt64BigEndian(h[Qcow2Header.SnapshotsOffsetOffset..]);
        ulong incompat = 0, compat = 0, autoclear = 0;
        int refcountOrder = 4;
        uint headerLength = Qcow2Header.V2HeaderLength;
        int compression = 0;
        if (version == 3)
        {
            if (got < Qcow2Header.V3MinHeaderLength) throw new Qcow2FormatException("header_length", Qcow2Header.HeaderLengthOffset, "qcow2 header too short");
            incompat = BinaryPrimitives.ReadUInt64BigEndian(h[Qcow2Header.IncompatibleFeaturesOffset..]);
            compat = BinaryPrimitives.ReadUInt64BigEndian(h[Qcow2Header.CompatibleFeaturesOffset..]);
            autoclear = BinaryPrimitives.ReadUInt64BigEndian(h[Qcow2Header.AutoclearFeaturesOffset..]);
            refcountOrder = BinaryPrimitives.ReadInt32BigEndian(h[Qcow2Header.RefcountOrderOffset..]);
            headerLength = BinaryPrimitives.ReadUInt32BigEndian(h[Qcow2Header.HeaderLengthOffset..]);
            if (headerLength < Qcow2Header.V3MinHeaderLength) throw new Qcow2FormatException("header_length", Qcow2Header.HeaderLengthOffset, "qcow2 header too short");
            if (headerLength > clusterSize) throw new Qcow2FormatException("header_length", Qcow2Header.HeaderLengthOffset, "qcow2 header exceeds cluster size");
            if (headerLength % 8 != 0) throw new Qcow2FormatException("header_length", Qcow2Header.HeaderLengthOffset, $"header length {headerLength} is not a multiple of 8");
            if (headerLength > Qcow2Header.CompressionTypeOffset) compression = h[Qcow2Header.CompressionTypeOffset];
        }
        if (backingOffset > (ulong)clusterSize)
            throw new Qcow2FormatException("backing_file_offset", Qcow2Header.BackingFileOffsetOffset, "Invalid backing file offset");
        if (crypt > (uint)Format.CryptMethod.Luks) throw new Qcow2FormatException("crypt_method", Qcow2Header.CryptMethodOffset, $"Unsupported encryption method {crypt}");
        if (compression is not ((int)Format.CompressionType.Zlib or (int)Format.CompressionType.Zstd))
            throw new Qcow2FormatException("compression_type", Qcow2Header.CompressionTypeOffset, $"qcow2: unknown compression type: {compression}");
        var compressionBit = (incompat & (ulong)IncompatibleFeatures.CompressionType) != 0;
        if (compressionBit && compression == 0)
            throw new Qcow2FormatException("incompatible_features", Qcow2Header.IncompatibleFeaturesOffset, "qcow2: Compression type incompatible feature bit must not be set");
        if (!compressionBit && compression != 0)
            throw new Qcow2FormatException("incompatible_features", Qcow2Header.IncompatibleFeaturesOffset, "qcow2: Compression type incompatible feature bit must be set");

        // Cluster 0 holds the extension area and the backing file name; one cluster is at most 2 MiB.
        var cluster0 = new byte[clusterSize];
        device.Read(cluster0, 0);
        var extEnd = backingOffset != 0 ? (long)backingOffset : clusterSize;
        string? backingFormat = null, dataFile = null;
        var features = new List<(int, int, string)>();
        uint nbBitmaps = 0; ulong bmDirSize = 0, bmDirOffset = 0, fdeOffset = 0, fdeLength = 0;
        var seen = new HashSet<uint>();
        for (long off = headerLength; ;)
        {
            if (off + HeaderExtension.PrefixSize > extEnd)
            {
                // QEMU stops quietly when fewer than 8 bytes remain; a v2 image may simply end its header here.
                break;
            }
            var type = BinaryPrimitives.ReadUInt32BigEndian(cluster0.AsSpan((int)off + HeaderExtension.TypeOffset));
            var len = BinaryPrimitives.ReadUInt32BigEndian(cluster0.AsSpan((int)off + HeaderExtension.LengthOffset));
            if (type == HeaderExtensionType.End) break;
            if (len > extEnd - off - HeaderExtension.PrefixSize)
                throw new Qcow2FormatException("header extension length", off + HeaderExtension.LengthOffset, "Header extension too large");
            if (!seen.Add(type))
                throw new Qcow2FormatException("header extension type", off, $"duplicate header extension 0x{type:x8}");
            var data = cluster0.AsSpan((int)off + HeaderExtension.PrefixSize, (int)len);
            switch (type)
            {
                case HeaderExtensionType.BackingFormat:
                    backingFormat = Latin1Z(data);
                    break;
                case HeaderExtensionType.ExternalDataFile:
                    dataFile = Latin1Z(data);
                    break;
                case HeaderExtensionType.FeatureNameTable:
                    // Unlike FeatureNameTable.Read, a ragged tail or an odd type is ignored: QEMU only looks names up.
                    for (var i = 0; i + FeatureNameTable.EntrySize <= data.Length; i += FeatureNameTable.EntrySize)
                        features.Add((data[i + FeatureNameTable.TypeOffset], data[i + FeatureNameTable.BitOffset],
                            Latin1Z(data.Slice(i + FeatureNameTable.NameOffset, FeatureNameTable.NameLength))));
                    break;
                case HeaderExtensionType.Bitmaps:
                    if (len != BitmapsExtension.DataLength) throw new Qcow2FormatException("bitmaps extension length", off + HeaderExtension.LengthOffset, $"bitmaps_ext: Invalid extension length {len}");
                    nbBitmaps = BinaryPrimitives.ReadUInt32BigEndian(data[BitmapsExtension.NbBitmapsOffset..]);
                    bmDirSize = BinaryPrimitives.ReadUInt64BigEndian(data[BitmapsExtension.DirectorySizeOffset..]);
                    bmDirOffset = BinaryPrimitives.ReadUInt64BigEndian(data[BitmapsExtension.DirectoryOffsetOffset..]);
                    break;
                case HeaderExtensionType.FullDiskEncryption:
                    if (crypt != (uint)Format.CryptMethod.Luks) throw new Qcow2FormatException("crypt_method", Qcow2Header.CryptMethodOffset, "CRYPTO header extension only expected with LUKS encryption method");
                    if (len != FdeExtension.DataLength) throw new Qcow2FormatException("FDE extension length", off + HeaderExtension.LengthOffset, $"Invalid encryption header extension length {len}");
                    fdeOffset = BinaryPrimitives.ReadUInt64BigEndian(data);
                    fdeLength = BinaryPrimitives.ReadUInt64BigEndian(data[8..]);
                    break;
            }
            off += HeaderExtension.PrefixSize + ((len + 7L) & ~7L);
        }

        var unknown = incompat & ~(ulong)IncompatibleFeatures.KnownToQemu;
        if (unknown != 0)
        {
            // Bit 63 is ours (journal pending): without replaying the journal the tables are stale, so
            // info/check refuse it exactly as QEMU does, by the name in the feature table.
            var names = new List<string>();
            foreach (var (ftype, bit, name) in features)
            {
                if (ftype == 0 && bit < 64 && (unknown & (1UL << bit)) != 0)
                {
                    names.Add(name);
                    unknown &= ~(1UL << bit);
                }
            }
            if (unknown != 0) names.Add($"Unknown incompatible feature: {unknown:x}");
            throw new Qcow2FormatException("incompatible_features", Qcow2Header.IncompatibleFeaturesOffset, $"Unsupported qcow2 feature(s): {string.Join(", ", names)}");
        }
        if (refcountOrder > Qcow2Header.MaxRefcountOrder)
            throw new Qcow2FormatException("refcount_order", Qcow2Header.RefcountOrderOffset, "Reference count entry width too large; may not exceed 64 bits");
        if ((incompat & (ulong)IncompatibleFeatures.ExtendedL2) != 0 && clusterBits < Qcow2Header.MinExtendedL2ClusterBits)
            throw new Qcow2FormatException("cluster_bits", Qcow2Header.ClusterBitsOffset, "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
        if ((autoclear & (ulong)AutoclearFeatures.RawExternalData) != 0 && (incompat & (ulong)IncompatibleFeatures.ExternalDataFile) == 0)
            throw new Qcow2FormatException("autoclear_features", Qcow2Header.AutoclearFeaturesOffset, "data-file-raw requires a data file");
        if (crypt == (uint)Format.CryptMethod.Luks && fdeLength == 0)
            throw new Qcow2FormatException("crypt_method", Qcow2Header.CryptMethodOffset, "LUKS encryption requires the full disk encryption header extension");

        if (rtClusters == 0 && !forCheck)
            throw new Qcow2FormatException("refcount_table_clusters", Qcow2Header.RefcountTableClustersOffset, "Image does not contain a reference count table");
        ValidateTable("refcount_table_offset", Qcow2Header.RefcountTableOffsetOffset, "refcount_table_clusters", Qcow2Header.RefcountTableClustersOffset, rtOffset, (ulong)rtClusters * (ulong)clusterSize / 8, 8, Qcow2Header.MaxRefcountTableBytes, clusterSize, "Reference count table");
        if (!forCheck)
            ValidateTable("snapshots_offset", Qcow2Header.SnapshotsOffsetOffset, "nb_snapshots", Qcow2Header.NbSnapshotsOffset, snapshotsOffset, nbSnapshots, SnapshotHeaderSize, (long)SnapshotHeaderSize * Qcow2Header.MaxSnapshots, clusterSize, "Snapshot table");
        ValidateTable("l1_table_offset", Qcow2Header.L1TableOffsetOffset, "l1_size", Qcow2Header.L1SizeOffset, l1Offset, l1Size, 8, MaxL1Bytes, clusterSize, "Active L1 table");
        var l2Entries = clusterSize / ((incompat & (ulong)IncompatibleFeatures.ExtendedL2) != 0 ? 16 : 8);
        var bytesPerL1 = (ulong)(clusterSize * l2Entries);
        var neededL1 = size / bytesPerL1 + (size % bytesPerL1 != 0 ? 1UL : 0UL);
        if (neededL1 > int.MaxValue) throw new Qcow2FormatException("size", Qcow2Header.SizeOffset, "Image is too big");
        if (l1Size < neededL1) throw new Qcow2FormatException("l1_size", Qcow2Header.L1SizeOffset, "L1 table is too small");

        string? backing = null;
        if (backingOffset != 0)
        {
            if (backingSize > Qcow2Header.MaxBackingFileNameLength || backingSize > (ulong)clusterSize - backingOffset)
                throw new Qcow2FormatException("backing_file_size", Qcow2Header.BackingFileSizeOffset, "Backing file name too long");
            backing = Encoding.UTF8.GetString(cluster0, (int)backingOffset, (int)backingSize);
        }

        var meta = new ImageMetadata
        {
            Version = version, ClusterBits = clusterBits, VirtualSize = size, CryptMethod = crypt,
            L1Size = l1Size, L1TableOffset = l1Offset, RefcountTableOffset = rtOffset, RefcountTableClusters = rtClusters,
            SnapshotCount = nbSnapshots, SnapshotsOffset = snapshotsOffset, Incompatible = incompat, Compatible = compat,
            Autoclear = autoclear, RefcountOrder = refcountOrder, HeaderLength = headerLength, CompressionType = compression,
            BackingFile = backing, BackingFormat = backingFormat, DataFile = dataFile, FeatureNames = features,
            BitmapCount = nbBitmaps, BitmapDirectorySize = bmDirSize, BitmapDirectoryOffset = bmDirOffset,
            FdeOffset = fdeOffset, FdeLength = fdeLength,
        };
        if ((autoclear & (ulong)AutoclearFeatures.Bitmaps) != 0)
            ValidateBitmapExtension(meta);
        if (!forCheck)
        {
            var (snaps, span) = ReadSnapshots(device, meta);
            meta.Snapshots = snaps;
            meta.SnapshotsSize = span;
        }
        return meta;
    }

    private static void ValidateBitmapExtension(ImageMetadata m)
    {
        if (m.BitmapCount == 0)
            throw new Qcow2FormatException("nb_bitmaps", BitmapsExtension.NbBitmapsOffset, "bitmaps_ext: found bitmaps extension with zero bitmaps");
        if (m.BitmapCount > BitmapsExtension.MaxBitmaps)
            throw new Qcow2FormatException("nb_bitmaps", BitmapsExtension.NbBitmapsOffset, $"bitmaps_ext: File {m.BitmapCount} bitmaps, exceeding the QEMU supported maximum of {BitmapsExtension.MaxBitmaps}");
        if (m.BitmapDirectorySize > BitmapsExtension.MaxDirectorySize)
            throw new Qcow2FormatException("bitmap_directory_size", BitmapsExtension.DirectorySizeOffset, "bitmaps_ext: bitmap directory size exceeds the QEMU supported maximum");
        if ((m.BitmapDirectoryOffset & (ulong)(m.ClusterSize - 1)) != 0)
            throw new Qcow2FormatException("bitmap_directory_offset", BitmapsExtension.DirectoryOffsetOffset, "bitmaps_ext: invalid bitmap directory offset");
    }

    /// <summary>QEMU's qcow2_validate_table: aligned, bounded in size, no overflow of the end offset.</summary>
    private static void ValidateTable(string field, long fieldOffset, string sizeField, long sizeFieldOffset, ulong offset, ulong entries, int entryLen, long maxBytes, long clusterSize, string what)
    {
        if (entries > (ulong)(maxBytes / entryLen))
            throw new Qcow2FormatException(sizeField, sizeFieldOffset, $"{what} too large");
        var bytes = entries * (ulong)entryLen;
        if (offset > long.MaxValue || (offset & (ulong)(clusterSize - 1)) != 0 || bytes > long.MaxValue - offset)
            throw new Qcow2FormatException(field, fieldOffset, $"{what} offset invalid");
    }

    /// <summary>
    /// Reads the snapshot table the way QEMU does (entries 8-aligned, reads past the end of the
    /// file yield zeros), bounded by QEMU's limits: at most 65536 entries, 1 KiB of extra data
    /// each, 64 MiB in total.
    /// </summary>
    internal static (IReadOnlyList<SnapshotInfo> Snapshots, long Span) ReadSnapshots(IBlockDevice device, ImageMetadata m)
    {
        if (m.SnapshotCount == 0) return ([], 0);
        var list = new List<SnapshotInfo>((int)Math.Min(m.SnapshotCount, 1024));
        var offset = (long)m.SnapshotsOffset;
        long tableLength = 0;
        var head = new byte[SnapshotHeaderSize];
        var extra = new byte[SnapshotEntry.KnownExtraSize];
        for (var i = 0; i < m.SnapshotCount; i++)
        {
            tableLength = (tableLength + 7) & ~7L;
            offset = (offset + 7) & ~7L;
            ReadZeroFilled(device, head, offset);
            offset += SnapshotHeaderSize;
            var l1Offset = BinaryPrimitives.ReadUInt64BigEndian(head.AsSpan(SnapshotEntry.L1TableOffsetOffset));
            var l1Size = BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan(SnapshotEntry.L1SizeOffset));
            var idSize = BinaryPrimitives.ReadUInt16BigEndian(head.AsSpan(SnapshotEntry.IdSizeOffset));
            var nameSize = BinaryPrimitives.ReadUInt16BigEndian(head.AsSpan(SnapshotEntry.NameSizeOffset));
            var dateSec = BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan(SnapshotEntry.DateSecondsOffset));
            var dateNsec = BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan(SnapshotEntry.DateNanosecondsOffset));
            var vmClock = BinaryPrimitives.ReadUInt64BigEndian(head.AsSpan(SnapshotEntry.VmClockOffset));
            ulong vmState = BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan(SnapshotEntry.VmStateSize32Offset));
            var extraSize = BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan(SnapshotEntry.ExtraDataSizeOffset));
            if (extraSize > SnapshotEntry.MaxExtraDataSize)
                throw new Qcow2FormatException("extra_data_size", offset - SnapshotHeaderSize + SnapshotEntry.ExtraDataSizeOffset, $"Too much extra metadata in snapshot table entry {i}");
            Array.Clear(extra);
            var known = (int)Math.Min((uint)SnapshotEntry.KnownExtraSize, extraSize);
            ReadZeroFilled(device, extra.AsSpan(0, known), offset);
            if (extraSize >= SnapshotEntry.ExtraVmStateSizeOffset + 8) vmState = BinaryPrimitives.ReadUInt64BigEndian(extra.AsSpan(SnapshotEntry.ExtraVmStateSizeOffset));
            long icount = extraSize >= SnapshotEntry.ExtraIcountOffset + 8 ? (long)BinaryPrimitives.ReadUInt64BigEndian(extra.AsSpan(SnapshotEntry.ExtraIcountOffset)) : -1;
            offset += extraSize;
            var strings = new byte[idSize + nameSize];
            ReadZeroFilled(device, strings, offset);
            offset += strings.Length;
            var id = Encoding.UTF8.GetString(strings, 0, idSize);
            var name = Encoding.UTF8.GetString(strings, idSize, nameSize);
            tableLength += SnapshotHeaderSize + extraSize + idSize + nameSize;
            if (tableLength > SnapshotTable.MaxTableSize)
                throw new Qcow2FormatException("nb_snapshots", Qcow2Header.NbSnapshotsOffset, "Snapshot table is too big");
            list.Add(new SnapshotInfo(Cut(id), Cut(name), l1Offset, l1Size, vmState, dateSec, dateNsec, vmClock, icount, extraSize));
        }
        return (list, offset - (long)m.SnapshotsOffset);
    }

    /// <summary>Reads the bitmap directory; throws when an entry breaks QEMU's directory rules.</summary>
    internal static IReadOnlyList<BitmapInfo> ReadBitmaps(IBlockDevice device, ImageMetadata m)
    {
        if (!m.BitmapsValid) return [];
        var dir = new byte[m.BitmapDirectorySize];
        ReadZeroFilled(device, dir, (long)m.BitmapDirectoryOffset);
        var list = new List<BitmapInfo>();
        var pos = 0;
        for (var i = 0u; i < m.BitmapCount; i++)
        {
            var at = (long)m.BitmapDirectoryOffset + pos;
            if (pos + BitmapDirectoryEntry.FixedSize > dir.Length)
                throw new Qcow2FormatException("bitmap directory", at, "bitmap directory entry runs past the directory size");
            var e = dir.AsSpan(pos);
            var tableOffset = BinaryPrimitives.ReadUInt64BigEndian(e[BitmapDirectoryEntry.TableOffsetOffset..]);
            var tableSize = BinaryPrimitives.ReadUInt32BigEndian(e[BitmapDirectoryEntry.TableSizeOffset..]);
            var flags = (BitmapFlags)BinaryPrimitives.ReadUInt32BigEndian(e[BitmapDirectoryEntry.FlagsOffset..]);
            var type = e[BitmapDirectoryEntry.TypeOffset];
            var granularityBits = e[BitmapDirectoryEntry.GranularityBitsOffset];
            var nameSize = BinaryPrimitives.ReadUInt16BigEndian(e[BitmapDirectoryEntry.NameSizeOffset..]);
            var extraSize = BinaryPrimitives.ReadUInt32BigEndian(e[BitmapDirectoryEntry.ExtraDataSizeOffset..]);
            var entrySize = ((long)BitmapDirectoryEntry.FixedSize + extraSize + nameSize + 7) & ~7L;
            if (pos + entrySize > dir.Length)
                throw new Qcow2FormatException("bitmap directory", at, "bitmap directory entry runs past the directory size");
            if ((tableOffset & (ulong)(m.ClusterSize - 1)) != 0 || tableSize > BitmapDirectoryEntry.MaxTableSize
                || type != BitmapDirectoryEntry.DirtyTrackingType
                || granularityBits is < BitmapDirectoryEntry.MinGranularityBits or > BitmapDirectoryEntry.MaxGranularityBits
                || (flags & BitmapFlags.Reserved) != 0 || nameSize is 0 or > BitmapDirectoryEntry.MaxNameSize
                || (extraSize != 0 && (flags & BitmapFlags.ExtraDataCompatible) == 0))
                throw new Qcow2FormatException("bitmap directory entry", at, $"bitmap directory entry {i} is invalid");
            var name = Encoding.UTF8.GetString(dir, pos + BitmapDirectoryEntry.FixedSize + (int)extraSize, nameSize);
            list.Add(new BitmapInfo(name, 1L << granularityBits, (uint)flags, tableOffset, tableSize));
            pos += (int)entrySize;
        }
        return list;
    }

    /// <summary>Reads like QEMU's file driver: bytes past the end of the file read as zeros.</summary>
    internal static void ReadZeroFilled(IBlockDevice device, Span<byte> buffer, long offset)
    {
        var n = offset < device.Length ? device.Read(buffer, offset) : 0;
        if (n < buffer.Length) buffer[n..].Clear();
    }

    private static string Latin1Z(ReadOnlySpan<byte> data)
    {
        var nul = data.IndexOf((byte)0);
        return Encoding.UTF8.GetString(nul >= 0 ? data[..nul] : data);
    }

    // QEMU stores id and name as C strings after reading: an embedded NUL ends them.
    private static string Cut(string s) => s.IndexOf('\0', StringComparison.Ordinal) is var i and >= 0 ? s[..i] : s;
}
