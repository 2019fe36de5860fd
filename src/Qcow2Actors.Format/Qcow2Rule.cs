namespace Qcow2Actors.Format;

/// <summary>
/// Stable identifiers of the rules the readers enforce (FORMAT.md §2 opener rules and the table
/// limits). A <see cref="Qcow2FormatException"/> names the rule it broke, so callers can tell
/// problems apart without parsing messages, and tools can word them as qemu-img does. The
/// numeric values are part of the contract: never renumber, only append.
/// </summary>
public enum Qcow2Rule
{
    /// <summary>A malformed structure no more specific rule covers.</summary>
    Malformed = 0,
    /// <summary>Fewer bytes than a version 2 header (72).</summary>
    HeaderTruncated = 1,
    /// <summary>The magic is not "QFI\xFB".</summary>
    BadMagic = 2,
    /// <summary>version is not 2 or 3.</summary>
    UnsupportedVersion = 3,
    /// <summary>cluster_bits outside 9..21.</summary>
    ClusterBitsOutOfRange = 4,
    /// <summary>A v3 header shorter than 104 bytes (declared or available).</summary>
    HeaderLengthTooShort = 5,
    /// <summary>header_length larger than a cluster.</summary>
    HeaderLengthExceedsCluster = 6,
    /// <summary>header_length not a multiple of 8.</summary>
    HeaderLengthUnaligned = 7,
    /// <summary>backing_file_offset beyond cluster 0.</summary>
    BackingFileOffsetInvalid = 8,
    /// <summary>backing_file_size above 1023 or past cluster 0.</summary>
    BackingFileNameTooLong = 9,
    /// <summary>crypt_method above 2.</summary>
    CryptMethodUnknown = 10,
    /// <summary>compression_type other than zlib (0) or zstd (1).</summary>
    CompressionTypeUnknown = 11,
    /// <summary>Incompatible bit 3 set with compression type zlib.</summary>
    CompressionBitWithoutType = 12,
    /// <summary>A compression type other than zlib without incompatible bit 3.</summary>
    CompressionTypeWithoutBit = 13,
    /// <summary>A header extension's length runs past the extension area.</summary>
    ExtensionTooLarge = 14,
    /// <summary>A header extension type appears twice.</summary>
    ExtensionDuplicate = 15,
    /// <summary>Fewer than 8 bytes left for an extension header (open profile only; QEMU stops there).</summary>
    ExtensionTruncated = 16,
    /// <summary>Backing format name of 16 bytes or more.</summary>
    BackingFormatTooLong = 17,
    /// <summary>Bitmaps extension whose length is not 24.</summary>
    BitmapsExtensionLength = 18,
    /// <summary>Full disk encryption extension without LUKS encryption.</summary>
    FdeWithoutLuks = 19,
    /// <summary>Full disk encryption extension whose length is not 16.</summary>
    FdeExtensionLength = 20,
    /// <summary>Full disk encryption area misaligned or past INT64_MAX.</summary>
    FdeAreaInvalid = 21,
    /// <summary>An incompatible feature bit the reader does not implement.</summary>
    UnsupportedIncompatibleFeature = 22,
    /// <summary>refcount_order above 6.</summary>
    RefcountOrderTooLarge = 23,
    /// <summary>Extended L2 entries with clusters below 16 KiB.</summary>
    ExtendedL2ClusterTooSmall = 24,
    /// <summary>Autoclear bit 1 (raw external data) without an external data file.</summary>
    RawDataWithoutDataFile = 25,
    /// <summary>LUKS encryption without a full disk encryption extension.</summary>
    LuksWithoutFde = 26,
    /// <summary>refcount_table_clusters is 0.</summary>
    NoRefcountTable = 27,
    /// <summary>Refcount table above QEMU's 8 MiB.</summary>
    RefcountTableTooLarge = 28,
    /// <summary>refcount_table_offset misaligned or overflowing.</summary>
    RefcountTableOffsetInvalid = 29,
    /// <summary>nb_snapshots above 65536.</summary>
    SnapshotTableTooLarge = 30,
    /// <summary>snapshots_offset misaligned or overflowing.</summary>
    SnapshotTableOffsetInvalid = 31,
    /// <summary>l1_size above QEMU's 32 MiB table.</summary>
    L1TableTooLarge = 32,
    /// <summary>l1_table_offset misaligned or overflowing.</summary>
    L1TableOffsetInvalid = 33,
    /// <summary>The virtual size needs more L1 entries than QEMU can address, or exceeds INT64_MAX.</summary>
    ImageTooBig = 34,
    /// <summary>l1_size cannot map the virtual size.</summary>
    L1TableTooSmall = 35,
    /// <summary>Bitmaps extension with nb_bitmaps 0.</summary>
    BitmapCountZero = 36,
    /// <summary>Bitmaps extension with more than 65535 bitmaps.</summary>
    BitmapCountTooLarge = 37,
    /// <summary>Bitmaps extension whose reserved field is not zero.</summary>
    BitmapsExtensionReserved = 38,
    /// <summary>Bitmap directory above 64 MiB.</summary>
    BitmapDirectoryTooLarge = 39,
    /// <summary>Bitmap directory offset misaligned or overflowing.</summary>
    BitmapDirectoryOffsetInvalid = 40,
    /// <summary>Bitmap directory size does not match its entries (open profile only).</summary>
    BitmapDirectorySizeMismatch = 41,
    /// <summary>Autoclear bit 0 (bitmaps) without a bitmaps extension.</summary>
    BitmapsBitWithoutExtension = 42,
    /// <summary>A bitmap directory entry QEMU would not load (type, granularity, table, flags, name, extra data).</summary>
    BitmapEntryInvalid = 43,
    /// <summary>A bitmap directory entry runs past the directory.</summary>
    BitmapEntryTruncated = 44,
    /// <summary>A snapshot entry with more than 1 KiB of extra data.</summary>
    SnapshotExtraDataTooLarge = 45,
    /// <summary>A v3 snapshot entry with less than 16 bytes of extra data (open profile; check counts it as corruption).</summary>
    SnapshotExtraDataTooSmall = 46,
    /// <summary>The snapshot table above QEMU's 64 MiB.</summary>
    SnapshotTableTooBig = 47,
    /// <summary>A snapshot entry runs past the bytes given (the caller may read more and retry).</summary>
    SnapshotEntryTruncated = 48,
    /// <summary>A snapshot field out of range (L1 offset or disk size past INT64_MAX).</summary>
    SnapshotFieldOutOfRange = 49,
    /// <summary>A name that is not valid UTF-8 or contains NUL (open profile).</summary>
    InvalidString = 50,
    /// <summary>backing_file_offset inside the header (open profile).</summary>
    BackingOverlapsHeader = 51,
    /// <summary>Raw external data combined with a backing file (open profile).</summary>
    RawDataWithBacking = 52,
    /// <summary>A malformed feature name table (open profile).</summary>
    FeatureNameTableMalformed = 53,
    /// <summary>Two bitmaps with the same name (open profile).</summary>
    BitmapNameDuplicate = 54,
}
