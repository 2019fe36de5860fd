using System.Buffers.Binary;

namespace Qcow2Actors.Format;

/// <summary>The bitmaps header extension (type 0x23852875, FORMAT.md §9): where the bitmap directory is.</summary>
/// <param name="NbBitmaps">Number of bitmaps in the directory (1..65535).</param>
/// <param name="DirectorySize">Size of the bitmap directory in bytes.</param>
/// <param name="DirectoryOffset">Host offset of the directory (cluster aligned).</param>
public sealed record BitmapsExtension(int NbBitmaps, long DirectorySize, long DirectoryOffset)
{
    /// <summary>Data length of the extension.</summary>
    public const int DataLength = 24;
    /// <summary>Offset of nb_bitmaps (u32).</summary>
    public const int NbBitmapsOffset = 0;
    /// <summary>Offset of the reserved u32 (must be 0).</summary>
    public const int ReservedOffset = 4;
    /// <summary>Offset of bitmap_directory_size (u64).</summary>
    public const int DirectorySizeOffset = 8;
    /// <summary>Offset of bitmap_directory_offset (u64).</summary>
    public const int DirectoryOffsetOffset = 16;
    /// <summary>QEMU's limit on the number of bitmaps.</summary>
    public const int MaxBitmaps = 65535;
    /// <summary>QEMU's limit on the directory size.</summary>
    public const long MaxDirectorySize = 64 * 1024 * 1024;

    /// <summary>Decodes and validates the extension data.</summary>
    /// <param name="data">Extension data; must be exactly 24 bytes.</param>
    /// <param name="clusterBits">Cluster bits, for the alignment check.</param>
    /// <param name="baseOffset">File offset of <paramref name="data"/> for error messages.</param>
    /// <param name="profile">Under <see cref="ValidationProfile.Open"/> the directory size must also be able to hold the entries.</param>
    /// <exception cref="Qcow2FormatException">Wrong length, reserved bits, counts or sizes out of QEMU's range, misaligned directory.</exception>
    public static BitmapsExtension Read(ReadOnlySpan<byte> data, int clusterBits, long baseOffset = 0, ValidationProfile profile = ValidationProfile.Open)
    {
        if (data.Length != DataLength)
            throw new Qcow2FormatException(Qcow2Rule.BitmapsExtensionLength, "bitmaps extension length", baseOffset - 4, $"{data.Length} is not {DataLength}", (ulong)data.Length);
        uint nb = BinaryPrimitives.ReadUInt32BigEndian(data[NbBitmapsOffset..]);
        if (nb == 0)
            throw new Qcow2FormatException(Qcow2Rule.BitmapCountZero, "nb_bitmaps", baseOffset + NbBitmapsOffset, $"{nb} is outside 1..{MaxBitmaps}", nb);
        if (nb > MaxBitmaps)
            throw new Qcow2FormatException(Qcow2Rule.BitmapCountTooLarge, "nb_bitmaps", baseOffset + NbBitmapsOffset, $"{nb} is outside 1..{MaxBitmaps}", nb);
        uint reserved = BinaryPrimitives.ReadUInt32BigEndian(data[ReservedOffset..]);
        if (reserved != 0)
            throw new Qcow2FormatException(Qcow2Rule.BitmapsExtensionReserved, "bitmaps extension reserved", baseOffset + ReservedOffset, $"0x{reserved:X8} is not zero", reserved);
        ulong size = BinaryPrimitives.ReadUInt64BigEndian(data[DirectorySizeOffset..]);
        if (size > MaxDirectorySize)
            throw new Qcow2FormatException(Qcow2Rule.BitmapDirectoryTooLarge, "bitmap_directory_size", baseOffset + DirectorySizeOffset, $"{size} exceeds QEMU's limit of {MaxDirectorySize}", size);
        if (profile == ValidationProfile.Open && size < (ulong)nb * BitmapDirectoryEntry.FixedSize)
            throw new Qcow2FormatException(Qcow2Rule.BitmapDirectorySizeMismatch, "bitmap_directory_size", baseOffset + DirectorySizeOffset, $"{size} bytes cannot hold {nb} bitmap directory entries", size);
        ulong offset = BinaryPrimitives.ReadUInt64BigEndian(data[DirectoryOffsetOffset..]);
        if ((offset & ((1UL << clusterBits) - 1)) != 0 || offset > long.MaxValue - MaxDirectorySize)
            throw new Qcow2FormatException(Qcow2Rule.BitmapDirectoryOffsetInvalid, "bitmap_directory_offset", baseOffset + DirectoryOffsetOffset, $"0x{offset:X} is not a cluster-aligned offset", offset);
        return new BitmapsExtension((int)nb, (long)size, (long)offset);
    }

    /// <summary>Encodes the 24 data bytes.</summary>
    /// <param name="destination">At least 24 bytes.</param>
    /// <returns>Bytes written (24).</returns>
    public int Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination[NbBitmapsOffset..], (uint)NbBitmaps);
        BinaryPrimitives.WriteUInt32BigEndian(destination[ReservedOffset..], 0);
        BinaryPrimitives.WriteUInt64BigEndian(destination[DirectorySizeOffset..], (ulong)DirectorySize);
        BinaryPrimitives.WriteUInt64BigEndian(destination[DirectoryOffsetOffset..], (ulong)DirectoryOffset);
        return DataLength;
    }
}
