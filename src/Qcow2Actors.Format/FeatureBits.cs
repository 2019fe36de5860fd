namespace Qcow2Actors.Format;

/// <summary>Incompatible feature bits (header bytes 72-79). An opener must refuse any bit it does not implement.</summary>
[Flags]
public enum IncompatibleFeatures : ulong
{
    /// <summary>No bits set.</summary>
    None = 0,
    /// <summary>Bit 0: refcounts may be stale and must be rebuilt from L1/L2 before they are trusted.</summary>
    Dirty = 1UL << 0,
    /// <summary>Bit 1: metadata may be corrupt; only repair may write.</summary>
    Corrupt = 1UL << 1,
    /// <summary>Bit 2: guest data lives in an external data file at host offset = guest offset.</summary>
    ExternalDataFile = 1UL << 2,
    /// <summary>Bit 3: header byte 104 (compression_type) is present and non-zero.</summary>
    CompressionType = 1UL << 3,
    /// <summary>Bit 4: 128-bit L2 entries with 32 subclusters.</summary>
    ExtendedL2 = 1UL << 4,
    /// <summary>Every bit QEMU implements (bits 0-4).</summary>
    KnownToQemu = Dirty | Corrupt | ExternalDataFile | CompressionType | ExtendedL2,
    /// <summary>
    /// Bit 63, Qcow2Actors' own: the journal holds metadata not yet written to the tables.
    /// Chosen far from where QEMU assigns new bits so QEMU refuses such an image by name
    /// instead of reading stale tables.
    /// </summary>
    JournalPending = 1UL << 63,
    /// <summary>Every bit Qcow2Actors implements: QEMU's five plus <see cref="JournalPending"/>.</summary>
    KnownToQcow2Actors = KnownToQemu | JournalPending,
}

/// <summary>Compatible feature bits (header bytes 80-87). Unknown ones are ignored but written back.</summary>
[Flags]
public enum CompatibleFeatures : ulong
{
    /// <summary>No bits set.</summary>
    None = 0,
    /// <summary>Bit 0: refcount updates may be put off while the dirty bit is set.</summary>
    LazyRefcounts = 1UL << 0,
}

/// <summary>Autoclear feature bits (header bytes 88-95). A writer that does not maintain a bit must clear it.</summary>
[Flags]
public enum AutoclearFeatures : ulong
{
    /// <summary>No bits set.</summary>
    None = 0,
    /// <summary>Bit 0: the bitmaps extension is consistent with the image.</summary>
    Bitmaps = 1UL << 0,
    /// <summary>Bit 1: the external data file is a valid raw image by itself (requires incompatible bit 2).</summary>
    RawExternalData = 1UL << 1,
    /// <summary>Every bit QEMU implements (bits 0-1).</summary>
    KnownToQemu = Bitmaps | RawExternalData,
}

/// <summary>Compression algorithm of compressed clusters (header byte 104).</summary>
public enum CompressionType : byte
{
    /// <summary>Raw DEFLATE (RFC 1951), the default and the meaning when the field is absent.</summary>
    Zlib = 0,
    /// <summary>Zstandard frames; requires incompatible bit 3.</summary>
    Zstd = 1,
}

/// <summary>Encryption method (header bytes 32-35).</summary>
public enum CryptMethod : uint
{
    /// <summary>Not encrypted.</summary>
    None = 0,
    /// <summary>Legacy AES-CBC (insecure, read-only in QEMU).</summary>
    Aes = 1,
    /// <summary>LUKS; requires the full disk encryption header extension.</summary>
    Luks = 2,
}
