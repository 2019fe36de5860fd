using System.Buffers.Binary;

namespace Qcow2Actors.Format;

/// <summary>
/// One refcount table entry (FORMAT.md §5): a refcount block offset in bits 9-63, bits 0-8
/// reserved. 0 means no block, so all refcounts it would cover are 0.
/// </summary>
/// <param name="raw">The entry as stored.</param>
public readonly struct RefcountTableEntry(ulong raw) : IEquatable<RefcountTableEntry>
{
    /// <summary>Bytes per entry.</summary>
    public const int Size = 8;
    /// <summary>Bits 9-63: refcount block offset.</summary>
    public const ulong OffsetMask = 0xFFFFFFFFFFFFFE00UL;
    /// <summary>Bits 0-8, which must be zero.</summary>
    public const ulong ReservedMask = 0x1FFUL;

    /// <summary>The raw value.</summary>
    public ulong Raw { get; } = raw;
    /// <summary>Host offset of the refcount block, 0 when there is none.</summary>
    public long BlockOffset => (long)(Raw & OffsetMask);
    /// <summary>Reserved bits that are set (should be 0).</summary>
    public ulong ReservedBits => Raw & ReservedMask;
    /// <summary>True when no block is allocated.</summary>
    public bool IsUnallocated => BlockOffset == 0;

    /// <summary>An entry pointing at a refcount block.</summary>
    /// <param name="blockOffset">Cluster-aligned host offset.</param>
    public static RefcountTableEntry Create(long blockOffset)
    {
        if (blockOffset < 0 || ((ulong)blockOffset & ReservedMask) != 0)
            throw new ArgumentOutOfRangeException(nameof(blockOffset), blockOffset, "block offset must be non-negative and 512-aligned");
        return new RefcountTableEntry((ulong)blockOffset);
    }

    /// <summary>Describes what is wrong (reserved bits, misalignment, beyond INT64_MAX), or null.</summary>
    /// <param name="clusterBits">Cluster bits.</param>
    public string? Validate(int clusterBits)
    {
        if (ReservedBits != 0) return $"refcount table entry 0x{Raw:X16} has reserved bits 0x{ReservedBits:X} set";
        if (Raw > long.MaxValue) return $"refcount table entry 0x{Raw:X16} points beyond INT64_MAX";
        if ((BlockOffset & ((1L << clusterBits) - 1)) != 0) return $"refcount table entry 0x{Raw:X16} points at an unaligned block";
        return null;
    }

    /// <summary>Reads entry <paramref name="index"/> of a refcount table.</summary>
    /// <param name="table">Table bytes.</param>
    /// <param name="index">Entry index.</param>
    public static RefcountTableEntry Read(ReadOnlySpan<byte> table, long index) =>
        new(BinaryPrimitives.ReadUInt64BigEndian(table[checked((int)(index * Size))..]));

    /// <summary>Writes this entry at <paramref name="index"/> of a refcount table.</summary>
    /// <param name="table">Table bytes.</param>
    /// <param name="index">Entry index.</param>
    public void Write(Span<byte> table, long index) =>
        BinaryPrimitives.WriteUInt64BigEndian(table[checked((int)(index * Size))..], Raw);

    /// <inheritdoc/>
    public bool Equals(RefcountTableEntry other) => Raw == other.Raw;
    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is RefcountTableEntry e && Equals(e);
    /// <inheritdoc/>
    public override int GetHashCode() => Raw.GetHashCode();
    /// <summary>Equality of raw values.</summary>
    public static bool operator ==(RefcountTableEntry left, RefcountTableEntry right) => left.Equals(right);
    /// <summary>Inequality of raw values.</summary>
    public static bool operator !=(RefcountTableEntry left, RefcountTableEntry right) => !left.Equals(right);
    /// <inheritdoc/>
    public override string ToString() => $"RefcountTableEntry(0x{Raw:X16})";
}
