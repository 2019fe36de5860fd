using System.Buffers.Binary;

namespace Qcow2Actors.Format;

/// <summary>
/// Cluster 0 as a whole (FORMAT.md §2 and §4): the header, the header extensions and the backing
/// file name. Known extensions are decoded into typed properties; unknown ones are kept byte for
/// byte and written back. <see cref="Write"/> always lays the cluster out in qemu-img's order.
/// </summary>
public sealed class ImageHeaderBlock
{
    /// <summary>QEMU's limit on the backing format name (it keeps it in a 16-byte buffer with a NUL).</summary>
    public const int MaxBackingFormatLength = 15;

    /// <summary>Creates a block around a header with no extensions.</summary>
    /// <param name="header">The header; <see cref="Write"/> updates its backing file fields.</param>
    public ImageHeaderBlock(Qcow2Header header) => Header = header;

    /// <summary>The fixed header.</summary>
    public Qcow2Header Header { get; set; }
    /// <summary>Backing file format ("qcow2", "raw"…), or null.</summary>
    public string? BackingFormat { get; set; }
    /// <summary>External data file name, or null.</summary>
    public string? DataFile { get; set; }
    /// <summary>Feature name table, or null. Written for v3 only, as qemu-img does.</summary>
    public FeatureNameTable? FeatureNames { get; set; }
    /// <summary>Bitmaps extension, or null. Only decoded while autoclear bit 0 is set (otherwise it is stale).</summary>
    public BitmapsExtension? Bitmaps { get; set; }
    /// <summary>True when the image carried a bitmaps extension without autoclear bit 0; it was dropped, as QEMU does.</summary>
    public bool HadStaleBitmapsExtension { get; set; }
    /// <summary>Full disk encryption header pointer, or null.</summary>
    public FdeExtension? Fde { get; set; }
    /// <summary>Extensions of unknown type, in file order, kept byte for byte.</summary>
    public List<HeaderExtension> UnknownExtensions { get; } = [];
    /// <summary>Types of the extensions as they appeared in the file (informational; writing uses qemu-img's order).</summary>
    public IReadOnlyList<uint> FileOrder { get; private set; } = [];
    /// <summary>Backing file name, or null when there is no backing file.</summary>
    public string? BackingFileName { get; set; }

    /// <summary>
    /// Decodes cluster 0. <paramref name="cluster0"/> is the first cluster_size bytes of the file, or
    /// all of it when the file is shorter (missing bytes read as zeros, like a read past the end).
    /// Validates in QEMU's order: the fixed header (<see cref="Qcow2Header.Read"/>'s first half), the
    /// extensions (none overruns the area (rule 17), each type at most once, their contents),
    /// incompatible bits outside <paramref name="supported"/> named from the feature name table
    /// (rule 6), the table layout, LUKS ⇔ FDE (rule 12) and bitmaps bit ⇔ extension.
    /// </summary>
    /// <param name="cluster0">Bytes from file offset 0.</param>
    /// <param name="supported">Incompatible bits the caller implements.</param>
    /// <param name="profile">Who reads: the rules and their order are the same, see <see cref="ValidationProfile"/> for the differences.</param>
    /// <exception cref="Qcow2FormatException">Anything malformed or unsupported, naming the <see cref="Qcow2Rule"/>.</exception>
    public static ImageHeaderBlock Read(ReadOnlySpan<byte> cluster0, IncompatibleFeatures supported = IncompatibleFeatures.KnownToQcow2Actors,
        ValidationProfile profile = ValidationProfile.Open)
    {
        var header = Qcow2Header.ReadFixed(cluster0, profile);
        bool strict = profile == ValidationProfile.Open;
        int clusterSize = header.ClusterSize;
        ReadOnlySpan<byte> c = cluster0;
        // A prefix holding every byte the walk below looks at needs no padding (see UsedLength).
        if (c.Length < clusterSize && UsedLength(c) < 0)
        {
            var padded = new byte[clusterSize];
            c.CopyTo(padded);
            c = padded;
        }
        else if (c.Length > clusterSize)
        {
            c = c[..clusterSize];
        }

        var block = new ImageHeaderBlock(header);
        // Extension types in file order, in a plain array: List<uint> has no precompiled code, and the JIT compiled
        // eight of its methods on every `q2a info` (bench/results/info-startup-2026-12-03.md).
        var seen = new uint[8];
        int seenCount = 0;
        int end = header.BackingFileOffset != 0 ? (int)header.BackingFileOffset : clusterSize;
        int off = header.HeaderLength;
        while (off < end)
        {
            if (end - off < HeaderExtension.PrefixSize)
            {
                // QEMU stops quietly here; we refuse to open such an image (a fragment suggests garbage).
                if (!strict) break;
                throw new Qcow2FormatException(Qcow2Rule.ExtensionTruncated, "header extension", off,
                    $"{end - off} bytes left before the end of the extension area at {end}, too few for an extension header", (ulong)(end - off));
            }
            uint type = BinaryPrimitives.ReadUInt32BigEndian(c[(off + HeaderExtension.TypeOffset)..]);
            uint len = BinaryPrimitives.ReadUInt32BigEndian(c[(off + HeaderExtension.LengthOffset)..]);
            if (type == HeaderExtensionType.End) break;
            int dataAt = off + HeaderExtension.PrefixSize;
            if (len > (uint)(end - dataAt))
                throw new Qcow2FormatException(Qcow2Rule.ExtensionTooLarge, "header extension length", off + HeaderExtension.LengthOffset,
                    $"extension 0x{type:X8} of {len} bytes overruns the extension area ending at {end}", len);
            if (Contains(seen, seenCount, type))
                throw new Qcow2FormatException(Qcow2Rule.ExtensionDuplicate, "header extension type", off, $"extension 0x{type:X8} appears more than once", type);
            if (seenCount == seen.Length)
            {
                var grown = new uint[seen.Length * 2];
                Array.Copy(seen, grown, seenCount);
                seen = grown;
            }
            seen[seenCount++] = type;
            var data = c.Slice(dataAt, (int)len);
            switch (type)
            {
                case HeaderExtensionType.BackingFormat:
                    if (len > MaxBackingFormatLength)
                        throw new Qcow2FormatException(Qcow2Rule.BackingFormatTooLong, "backing format", dataAt, $"{len} bytes exceed QEMU's limit of {MaxBackingFormatLength}", len);
                    block.BackingFormat = Strings.Decode(data, "backing format", dataAt, profile);
                    break;
                case HeaderExtensionType.ExternalDataFile:
                    block.DataFile = Strings.Decode(data, "data file name", dataAt, profile);
                    break;
                case HeaderExtensionType.FeatureNameTable:
                    block.FeatureNames = FeatureNameTable.Read(data, dataAt, profile);
                    break;
                case HeaderExtensionType.Bitmaps:
                    // QEMU judges the length first; without autoclear bit 0 the contents are stale and ignored.
                    if (len != BitmapsExtension.DataLength)
                        throw new Qcow2FormatException(Qcow2Rule.BitmapsExtensionLength, "bitmaps extension length", off + HeaderExtension.LengthOffset, $"{len} is not {BitmapsExtension.DataLength}", len);
                    if ((header.AutoclearFeatures & AutoclearFeatures.Bitmaps) != 0)
                        block.Bitmaps = BitmapsExtension.Read(data, header.ClusterBits, dataAt, profile);
                    else
                        block.HadStaleBitmapsExtension = true;
                    break;
                case HeaderExtensionType.FullDiskEncryption:
                    if (header.CryptMethod != CryptMethod.Luks)
                        throw new Qcow2FormatException(Qcow2Rule.FdeWithoutLuks, "header extension type", off, "full disk encryption extension without LUKS encryption (crypt_method 2)", (ulong)header.CryptMethod);
                    block.Fde = FdeExtension.Read(data, header.ClusterBits, dataAt);
                    break;
                default:
                    block.UnknownExtensions.Add(new HeaderExtension(type, data.ToArray()));
                    break;
            }
            // The padding may run past the area end; the loop then stops, as in QEMU.
            off = dataAt + (((int)len + 7) & ~7);
        }
        var order = new uint[seenCount];
        Array.Copy(seen, order, seenCount);
        block.FileOrder = order;

        header.CheckIncompatibleFeatures(supported, block.FeatureNames);
        header.ValidateLayout(profile);
        if (header.CryptMethod == CryptMethod.Luks && block.Fde is null)
            throw new Qcow2FormatException(Qcow2Rule.LuksWithoutFde, "crypt_method", Qcow2Header.CryptMethodOffset, "LUKS encryption without a full disk encryption header extension", (ulong)header.CryptMethod);
        if ((header.AutoclearFeatures & AutoclearFeatures.Bitmaps) != 0 && block.Bitmaps is null)
            throw new Qcow2FormatException(Qcow2Rule.BitmapsBitWithoutExtension, "autoclear_features", Qcow2Header.AutoclearFeaturesOffset, "autoclear bit 0 (bitmaps) is set but there is no bitmaps extension", (ulong)header.AutoclearFeatures);

        if (header.BackingFileOffset != 0)
        {
            int at = (int)header.BackingFileOffset;
            block.BackingFileName = Strings.Decode(c.Slice(at, header.BackingFileSize), "backing file name", at, profile);
        }
        return block;
    }

    /// <summary>
    /// How many leading bytes of cluster 0 <see cref="Read"/> looks at, judged from
    /// <paramref name="prefix"/> (the first bytes of cluster 0): the header, the extension chain up
    /// to its end marker or the end of the extension area, and the backing file name. <see cref="Read"/>
    /// on a prefix of at least that many bytes decodes exactly what it decodes from the whole
    /// cluster, so an opener of a 2 MiB cluster 0 reads kilobytes. -1 when the prefix does not
    /// reach that far or the header is one <see cref="Read"/> may refuse: read the whole cluster then.
    /// </summary>
    /// <param name="prefix">The first bytes of cluster 0 (4 KiB covers any header qemu-img writes).</param>
    public static int UsedLength(ReadOnlySpan<byte> prefix)
    {
        const int Unknown = -1;
        if (prefix.Length < Qcow2Header.V3MinHeaderLength) return Unknown;
        uint version = BinaryPrimitives.ReadUInt32BigEndian(prefix[Qcow2Header.VersionOffset..]);
        uint bits = BinaryPrimitives.ReadUInt32BigEndian(prefix[Qcow2Header.ClusterBitsOffset..]);
        if (version is not (2 or 3) || bits is < Qcow2Header.MinClusterBits or > Qcow2Header.MaxClusterBits) return Unknown;
        long clusterSize = 1L << (int)bits;
        long headerLength = version == 2 ? Qcow2Header.V2HeaderLength : BinaryPrimitives.ReadUInt32BigEndian(prefix[Qcow2Header.HeaderLengthOffset..]);
        if (headerLength < Qcow2Header.V2HeaderLength || headerLength > clusterSize) return Unknown;
        ulong backingOffset = BinaryPrimitives.ReadUInt64BigEndian(prefix[Qcow2Header.BackingFileOffsetOffset..]);
        uint backingSize = BinaryPrimitives.ReadUInt32BigEndian(prefix[Qcow2Header.BackingFileSizeOffset..]);
        if (backingOffset > (ulong)clusterSize || backingSize > (ulong)clusterSize - backingOffset) return Unknown;
        long used = Math.Max(headerLength, backingOffset != 0 ? (long)backingOffset + backingSize : 0);
        long end = backingOffset != 0 ? (long)backingOffset : clusterSize;
        long off = headerLength;
        // The same walk as Read's: it stops (or refuses) at a fragment, the end marker or an overrun.
        while (off < end && end - off >= HeaderExtension.PrefixSize)
        {
            if (off + HeaderExtension.PrefixSize > prefix.Length) return Unknown;
            uint type = BinaryPrimitives.ReadUInt32BigEndian(prefix[(int)(off + HeaderExtension.TypeOffset)..]);
            uint len = BinaryPrimitives.ReadUInt32BigEndian(prefix[(int)(off + HeaderExtension.LengthOffset)..]);
            used = Math.Max(used, off + HeaderExtension.PrefixSize);
            if (type == HeaderExtensionType.End) break;
            long dataAt = off + HeaderExtension.PrefixSize;
            if (len > end - dataAt) break;
            used = Math.Max(used, dataAt + len);
            off = dataAt + ((len + 7) & ~7L);
        }
        return used <= prefix.Length ? (int)used : Unknown;
    }

    /// <summary>
    /// Bytes <see cref="Write"/> will use: header, extensions, end marker and backing name.
    /// </summary>
    public int EncodedLength
    {
        get
        {
            int n = Header.Version == 2 ? Qcow2Header.V2HeaderLength : Header.HeaderLength;
            foreach (var (_, len) in Layout()) n += HeaderExtension.StoredSizeOf(len);
            n += HeaderExtension.PrefixSize;
            if (BackingFileName is not null) n += Strings.Encode(BackingFileName, "backing file name").Length;
            return n;
        }
    }

    private IEnumerable<(uint Type, int Length)> Layout()
    {
        if (BackingFormat is not null) yield return (HeaderExtensionType.BackingFormat, Strings.Encode(BackingFormat, "backing format").Length);
        if (DataFile is not null) yield return (HeaderExtensionType.ExternalDataFile, Strings.Encode(DataFile, "data file name").Length);
        if (Fde is not null) yield return (HeaderExtensionType.FullDiskEncryption, FdeExtension.DataLength);
        if (FeatureNames is not null && Header.Version >= 3) yield return (HeaderExtensionType.FeatureNameTable, FeatureNames.DataLength);
        if (Bitmaps is not null) yield return (HeaderExtensionType.Bitmaps, BitmapsExtension.DataLength);
        foreach (var u in UnknownExtensions) yield return (u.Type, u.Data.Length);
    }

    /// <summary>
    /// Lays out the whole of cluster 0 in qemu-img's order (header, backing format, data file, FDE,
    /// feature name table (v3 only), bitmaps, unknown extensions, end marker, backing file name),
    /// zero-fills the rest of the cluster and sets <see cref="Qcow2Header.BackingFileOffset"/> and
    /// <see cref="Qcow2Header.BackingFileSize"/> to where the name landed.
    /// </summary>
    /// <param name="destination">At least cluster_size bytes; exactly cluster_size bytes are written.</param>
    /// <returns>Bytes of cluster 0 that carry content (the rest is zero).</returns>
    /// <exception cref="InvalidOperationException">The content does not fit in one cluster, or an unknown extension reuses a known type.</exception>
    public int Write(Span<byte> destination)
    {
        int clusterSize = Header.ClusterSize;
        if (destination.Length < clusterSize)
            throw new ArgumentException($"cluster 0 needs {clusterSize} bytes, the destination has {destination.Length}", nameof(destination));
        foreach (var u in UnknownExtensions)
        {
            if (u.Type is HeaderExtensionType.End or HeaderExtensionType.BackingFormat or HeaderExtensionType.ExternalDataFile
                or HeaderExtensionType.FeatureNameTable or HeaderExtensionType.Bitmaps or HeaderExtensionType.FullDiskEncryption)
                throw new InvalidOperationException($"unknown extension list holds known type 0x{u.Type:X8}; use the typed property");
        }
        if (BackingFormat is not null && Strings.Encode(BackingFormat, "backing format").Length > MaxBackingFormatLength)
            throw new InvalidOperationException($"backing format longer than {MaxBackingFormatLength} bytes");
        byte[]? name = BackingFileName is null ? null : Strings.Encode(BackingFileName, "backing file name");
        if (name is not null && name.Length > Qcow2Header.MaxBackingFileNameLength)
            throw new InvalidOperationException($"backing file name longer than {Qcow2Header.MaxBackingFileNameLength} bytes");
        int total = EncodedLength;
        if (total > clusterSize)
            throw new InvalidOperationException($"header, extensions and backing file name need {total} bytes, more than the {clusterSize}-byte cluster");

        var c = destination[..clusterSize];
        c.Clear();
        int headerLength = Header.Version == 2 ? Qcow2Header.V2HeaderLength : Header.HeaderLength;
        int off = headerLength;
        if (BackingFormat is not null) off = WriteExt(c, off, HeaderExtensionType.BackingFormat, Strings.Encode(BackingFormat, "backing format"));
        if (DataFile is not null) off = WriteExt(c, off, HeaderExtensionType.ExternalDataFile, Strings.Encode(DataFile, "data file name"));
        if (Fde is not null)
        {
            var d = new byte[FdeExtension.DataLength];
            Fde.Write(d);
            off = WriteExt(c, off, HeaderExtensionType.FullDiskEncryption, d);
        }
        if (FeatureNames is not null && Header.Version >= 3)
        {
            var d = new byte[FeatureNames.DataLength];
            FeatureNames.Write(d);
            off = WriteExt(c, off, HeaderExtensionType.FeatureNameTable, d);
        }
        if (Bitmaps is not null)
        {
            var d = new byte[BitmapsExtension.DataLength];
            Bitmaps.Write(d);
            off = WriteExt(c, off, HeaderExtensionType.Bitmaps, d);
        }
        foreach (var u in UnknownExtensions) off = WriteExt(c, off, u.Type, u.Data);
        off += HeaderExtension.PrefixSize; // end marker: type 0, length 0, already zero
        if (name is not null)
        {
            Header.BackingFileOffset = off;
            Header.BackingFileSize = name.Length;
            name.CopyTo(c[off..]);
            off += name.Length;
        }
        else
        {
            Header.BackingFileOffset = 0;
            Header.BackingFileSize = 0;
        }
        Header.Write(c);
        return off;
    }

    private static int WriteExt(Span<byte> c, int off, uint type, ReadOnlySpan<byte> data)
    {
        BinaryPrimitives.WriteUInt32BigEndian(c[(off + HeaderExtension.TypeOffset)..], type);
        BinaryPrimitives.WriteUInt32BigEndian(c[(off + HeaderExtension.LengthOffset)..], (uint)data.Length);
        data.CopyTo(c[(off + HeaderExtension.PrefixSize)..]);
        return off + HeaderExtension.StoredSizeOf(data.Length);
    }

    private static bool Contains(uint[] values, int count, uint value)
    {
        for (int i = 0; i < count; i++)
            if (values[i] == value) return true;
        return false;
    }
}
