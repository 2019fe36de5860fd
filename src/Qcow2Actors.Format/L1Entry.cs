using System.Buffers.Binary;

namespace Qcow2Actors.Format;

/// <summary>
/// One 64-bit L1 table entry (FORMAT.md §6): an L2 table offset in bits 9-55 and the COPIED
/// flag in bit 63 (the L2 table's refcount is exactly 1).
/// </summary>
/// <param name="raw">The entry as stored (host order after big-endian decoding).</param>
public readonly struct L1Entry(ulong raw) : IEquatable<L1Entry>
{
    /// <summary>Bytes per L1 entry.</summary>
    public const int Size = 8;
    /// <summary>Bits 9-55: the L2 table offset.</summary>
    public const ulong OffsetMask = 0x00FFFFFFFFFFFE00UL;
    /// <summary>Bit 63: the L2 table's refcount is 1 (only meaningful in the active L1).</summary>
    public const ulong CopiedFlag = 1UL << 63;
    /// <summary>Bits 0-8 and 56-62, which must be zero.</summary>
    public const ulong ReservedMask = 0x7F000000000001FFUL;

    /// <summary>The raw 64-bit value.</summary>
    public ulong Raw { get; } = raw;
    /// <summary>Host offset of the L2 table; 0 means the whole range is unallocated.</summary>
    public long L2Offset => (long)(Raw & OffsetMask);
    /// <summary>COPIED flag (bit 63).</summary>
    public bool IsCopied => (Raw & CopiedFlag) != 0;
    /// <summary>Reserved bits that are set (should be 0).</summary>
    public ulong ReservedBits => Raw & ReservedMask;
    /// <summary>True when no L2 table is referenced.</summary>
    public bool IsUnallocated => L2Offset == 0;

    /// <summary>An entry pointing at an L2 table.</summary>
    /// <param name="l2Offset">Cluster-aligned host offset of the L2 table, below 2^56.</param>
    /// <param name="copied">Whether the L2 table's refcount is 1.</param>
    public static L1Entry Create(long l2Offset, bool copied)
    {
        if (((ulong)l2Offset & ~OffsetMask) != 0)
            throw new ArgumentOutOfRangeException(nameof(l2Offset), l2Offset, "L2 offset must be 512-aligned and below 2^56");
        return new L1Entry((ulong)l2Offset | (copied ? CopiedFlag : 0));
    }

    /// <summary>The same entry with COPIED set or cleared.</summary>
    /// <param name="copied">New COPIED value.</param>
    public L1Entry WithCopied(bool copied) => new(copied ? Raw | CopiedFlag : Raw & ~CopiedFlag);

    /// <summary>Describes what is wrong with the entry (reserved bits, misaligned offset), or null when valid.</summary>
    /// <param name="clusterBits">Cluster bits of the image.</param>
    public string? Validate(int clusterBits)
    {
        if (ReservedBits != 0) return $"L1 entry 0x{Raw:X16} has reserved bits 0x{ReservedBits:X16} set";
        if ((L2Offset & ((1L << clusterBits) - 1)) != 0) return $"L1 entry 0x{Raw:X16} points at unaligned L2 offset 0x{L2Offset:X}";
        return null;
    }

    /// <summary>Reads entry <paramref name="index"/> of an L1 table.</summary>
    /// <param name="table">The table bytes.</param>
    /// <param name="index">Entry index.</param>
    public static L1Entry Read(ReadOnlySpan<byte> table, int index) =>
        new(BinaryPrimitives.ReadUInt64BigEndian(table[(index * Size)..]));

    /// <summary>Writes this entry at <paramref name="index"/> of an L1 table.</summary>
    /// <param name="table">The table bytes.</param>
    /// <param name="index">Entry index.</param>
    public void Write(Span<byte> table, int index) =>
        BinaryPrimitives.WriteUInt64BigEndian(table[(index * Size)..], Raw);

    /// <inheritdoc/>
    public bool Equals(L1Entry other) => Raw == other.Raw;
    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is L1Entry e && Equals(e);
    /// <inheritdoc/>
    public override int GetHashCode() => Raw.GetHashCode();
    /// <summary>Equality of raw values.</summary>
    public static bool operator ==(L1Entry left, L1Entry right) => left.Equals(right);
    /// <summary>Inequality of raw values.</summary>
    public static bool operator !=(L1Entry left, L1Entry right) => !left.Equals(right);
    /// <inheritdoc/>
    public override string ToString() => $"L1Entry(0x{Raw:X16})";
}
