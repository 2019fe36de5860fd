using System.Buffers.Binary;

namespace Qcow2Actors.Format;

/// <summary>
/// The full disk encryption header pointer (type 0x0537BE77): where the LUKS header lives. The
/// area is rounded up to whole clusters and refcounted.
/// </summary>
/// <param name="Offset">Host offset of the encryption header (cluster aligned).</param>
/// <param name="Length">Length of the encryption header in bytes.</param>
public sealed record FdeExtension(long Offset, long Length)
{
    /// <summary>Data length of the extension.</summary>
    public const int DataLength = 16;
    /// <summary>Offset of the u64 offset field.</summary>
    public const int OffsetOffset = 0;
    /// <summary>Offset of the u64 length field.</summary>
    public const int LengthOffset = 8;

    /// <summary>Decodes and validates the extension data.</summary>
    /// <param name="data">Exactly 16 bytes.</param>
    /// <param name="clusterBits">Cluster bits for the alignment check.</param>
    /// <param name="baseOffset">File offset of <paramref name="data"/> for error messages.</param>
    /// <exception cref="Qcow2FormatException">Wrong length, misaligned offset, or an area past INT64_MAX.</exception>
    public static FdeExtension Read(ReadOnlySpan<byte> data, int clusterBits, long baseOffset = 0)
    {
        if (data.Length != DataLength)
            throw new Qcow2FormatException(Qcow2Rule.FdeExtensionLength, "FDE extension length", baseOffset - 4, $"{data.Length} is not {DataLength}", (ulong)data.Length);
        ulong offset = BinaryPrimitives.ReadUInt64BigEndian(data[OffsetOffset..]);
        ulong length = BinaryPrimitives.ReadUInt64BigEndian(data[LengthOffset..]);
        if ((offset & ((1UL << clusterBits) - 1)) != 0)
            throw new Qcow2FormatException(Qcow2Rule.FdeAreaInvalid, "FDE offset", baseOffset + OffsetOffset, $"0x{offset:X} is not cluster aligned", offset);
        if (offset > long.MaxValue || length > (ulong)long.MaxValue - offset)
            throw new Qcow2FormatException(Qcow2Rule.FdeAreaInvalid, "FDE length", baseOffset + LengthOffset, $"0x{offset:X} + {length} exceeds INT64_MAX", length);
        return new FdeExtension((long)offset, (long)length);
    }

    /// <summary>Encodes the 16 data bytes.</summary>
    /// <param name="destination">At least 16 bytes.</param>
    /// <returns>Bytes written (16).</returns>
    public int Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination[OffsetOffset..], (ulong)Offset);
        BinaryPrimitives.WriteUInt64BigEndian(destination[LengthOffset..], (ulong)Length);
        return DataLength;
    }
}
