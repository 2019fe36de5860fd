namespace Qcow2Actors.Format;

/// <summary>Type codes of header extensions (FORMAT.md §4).</summary>
public static class HeaderExtensionType
{
    /// <summary>End of the extension area.</summary>
    public const uint End = 0x00000000;
    /// <summary>Backing file format name (e.g. "qcow2", "raw"), no NUL.</summary>
    public const uint BackingFormat = 0xE2792ACA;
    /// <summary>Feature name table: 48-byte entries naming feature bits.</summary>
    public const uint FeatureNameTable = 0x6803F857;
    /// <summary>Bitmaps extension (24 bytes).</summary>
    public const uint Bitmaps = 0x23852875;
    /// <summary>Full disk encryption header pointer (16 bytes, LUKS only).</summary>
    public const uint FullDiskEncryption = 0x0537BE77;
    /// <summary>External data file name ("DATA").</summary>
    public const uint ExternalDataFile = 0x44415441;
}

/// <summary>
/// One header extension as stored: type, and the data bytes without the 8-byte type/length
/// prefix and without the zero padding to 8. Used for extensions this library does not know,
/// which are written back byte for byte.
/// </summary>
/// <param name="Type">The extension type code.</param>
/// <param name="Data">The extension data (length = the stored len field).</param>
public sealed record HeaderExtension(uint Type, byte[] Data)
{
    /// <summary>Size of the type/length prefix of every extension.</summary>
    public const int PrefixSize = 8;
    /// <summary>Offset of the u32 type within an extension.</summary>
    public const int TypeOffset = 0;
    /// <summary>Offset of the u32 data length within an extension.</summary>
    public const int LengthOffset = 4;

    /// <summary>Bytes the extension occupies on disk: prefix, data, padding to 8.</summary>
    public int StoredSize => StoredSizeOf(Data.Length);

    /// <summary>Bytes an extension with <paramref name="dataLength"/> data bytes occupies on disk.</summary>
    /// <param name="dataLength">Length of the data.</param>
    public static int StoredSizeOf(int dataLength) => PrefixSize + ((dataLength + 7) & ~7);
}
