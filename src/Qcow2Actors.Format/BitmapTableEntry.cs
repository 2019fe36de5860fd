using System.Buffers.Binary;

namespace Qcow2Actors.Format;

/// <summary>
/// One bitmap table entry (FORMAT.md §9): a data cluster offset in bits 9-55, or, when that is 0,
/// bit 0 says whether the whole cluster's worth of bits is all ones (1) or all zeros (0).
/// </summary>
/// <param name="raw">The entry as stored.</param>
public readonly struct BitmapTableEntry(ulong raw) : IEquatable<BitmapTableEntry>
{
    /// <summary>Bytes per entry.</summary>
    public const int Size = 8;
    /// <summary>Bits 9-55: data cluster offset.</summary>
    public const ulong OffsetMask = 0x00FFFFFFFFFFFE00UL;
    /// <summary>Bit 0: all ones (only when the offset is 0).</summary>
    public const ulong AllOnesFlag = 1UL;
    /// <summary>Bits 1-8 and 56-63, which must be zero.</summary>
    public const ulong ReservedMask = 0xFF000000000001FEUL;

    /// <summary>The raw value.</summary>
    public ulong Raw { get; } = raw;
    /// <summary>Data cluster offset, 0 when the cluster is implicit.</summary>
    public long DataOffset => (long)(Raw & OffsetMask);
    /// <summary>True when there is no data cluster and every bit reads as 1.</summary>
    public bool IsAllOnes => DataOffset == 0 && (Raw & AllOnesFlag) != 0;
    /// <summary>True when there is no data cluster and every bit reads as 0.</summary>
    public bool IsAllZeros => DataOffset == 0 && (Raw & AllOnesFlag) == 0;

    /// <summary>An entry pointing at a data cluster.</summary>
    /// <param name="dataOffset">Cluster-aligned offset.</param>
    public static BitmapTableEntry Data(long dataOffset)
    {
        if (dataOffset <= 0 || ((ulong)dataOffset & ~OffsetMask) != 0)
            throw new ArgumentOutOfRangeException(nameof(dataOffset), dataOffset, "must be a positive 512-aligned offset below 2^56");
        return new BitmapTableEntry((ulong)dataOffset);
    }

    /// <summary>An entry whose bits are all ones.</summary>
    public static BitmapTableEntry AllOnes => new(AllOnesFlag);
    /// <summary>An entry whose bits are all zeros.</summary>
    public static BitmapTableEntry AllZeros => new(0);

    /// <summary>Describes what is wrong (reserved bits, bit 0 with an offset, misalignment), or null.</summary>
    /// <param name="clusterBits">Cluster bits.</param>
    public string? Validate(int clusterBits)
    {
        if ((Raw & ReservedMask) != 0) return $"bitmap table entry 0x{Raw:X16} has reserved bits set";
        if (DataOffset != 0 && (Raw & AllOnesFlag) != 0) return $"bitmap table entry 0x{Raw:X16} has bit 0 set with a data offset";
        if ((DataOffset & ((1L << clusterBits) - 1)) != 0) return $"bitmap table entry 0x{Raw:X16} points at an unaligned cluster";
        return null;
    }

    /// <summary>Reads entry <paramref name="index"/> of a bitmap table.</summary>
    /// <param name="table">Table bytes.</param>
    /// <param name="index">Entry index.</param>
    public static BitmapTableEntry Read(ReadOnlySpan<byte> table, int index) =>
        new(BinaryPrimitives.ReadUInt64BigEndian(table[(index * Size)..]));

    /// <summary>Writes this entry at <paramref name="index"/> of a bitmap table.</summary>
    /// <param name="table">Table bytes.</param>
    /// <param name="index">Entry index.</param>
    public void Write(Span<byte> table, int index) =>
        BinaryPrimitives.WriteUInt64BigEndian(table[(index * Size)..], Raw);

    /// <inheritdoc/>
    public bool Equals(BitmapTableEntry other) => Raw == other.Raw;
    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is BitmapTableEntry e && Equals(e);
    /// <inheritdoc/>
    public override int GetHashCode() => Raw.GetHashCode();
    /// <summary>Equality of raw values.</summary>
    public static bool operator ==(BitmapTableEntry left, BitmapTableEntry right) => left.Equals(right);
    /// <summary>Inequality of raw values.</summary>
    public static bool operator !=(BitmapTableEntry left, BitmapTableEntry right) => !left.Equals(right);
    /// <inheritdoc/>
    public override string ToString() => $"BitmapTableEntry(0x{Raw:X16})";
}

/// <summary>Bit access in bitmap data clusters: disk byte d maps to bit d &gt;&gt; granularity_bits, LSB first in each byte.</summary>
public static class BitmapData
{
    /// <summary>Bitmap bit index covering disk byte <paramref name="diskOffset"/>.</summary>
    /// <param name="diskOffset">Guest byte offset.</param>
    /// <param name="granularityBits">Granularity bits of the bitmap.</param>
    public static long BitIndex(long diskOffset, int granularityBits) => diskOffset >> granularityBits;

    /// <summary>Reads bit <paramref name="bit"/>.</summary>
    /// <param name="data">Bitmap bytes.</param>
    /// <param name="bit">Bit index.</param>
    public static bool Get(ReadOnlySpan<byte> data, long bit) => (data[checked((int)(bit >> 3))] & (1 << (int)(bit & 7))) != 0;

    /// <summary>Sets or clears bit <paramref name="bit"/>.</summary>
    /// <param name="data">Bitmap bytes.</param>
    /// <param name="bit">Bit index.</param>
    /// <param name="value">New value.</param>
    public static void Set(Span<byte> data, long bit, bool value)
    {
        ref byte b = ref data[checked((int)(bit >> 3))];
        int mask = 1 << (int)(bit & 7);
        b = (byte)(value ? b | mask : b & ~mask);
    }
}
