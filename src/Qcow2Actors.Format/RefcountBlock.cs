using System.Buffers.Binary;

namespace Qcow2Actors.Format;

/// <summary>
/// Entry access in a refcount block (one cluster of 1- to 64-bit refcounts, FORMAT.md §5). Widths of
/// 8 bits and more are big-endian integers; narrower ones are packed LSB first (entry 0 in the
/// low bits of byte 0).
/// </summary>
public static class RefcountBlock
{
    /// <summary>Largest refcount a width can hold: 2^bits − 1.</summary>
    /// <param name="refcountOrder">log2 of the width (0-6).</param>
    public static ulong MaxValue(int refcountOrder)
    {
        CheckOrder(refcountOrder);
        int bits = 1 << refcountOrder;
        return bits == 64 ? ulong.MaxValue : (1UL << bits) - 1;
    }

    /// <summary>Refcounts per block: cluster_size × 8 / refcount_bits.</summary>
    /// <param name="clusterBits">Cluster bits.</param>
    /// <param name="refcountOrder">log2 of the width.</param>
    public static long EntriesPerBlock(int clusterBits, int refcountOrder)
    {
        CheckOrder(refcountOrder);
        return (1L << clusterBits) * 8 >> refcountOrder;
    }

    /// <summary>Reads refcount <paramref name="index"/>.</summary>
    /// <param name="block">The block bytes.</param>
    /// <param name="index">Entry index.</param>
    /// <param name="refcountOrder">log2 of the width.</param>
    public static ulong Get(ReadOnlySpan<byte> block, long index, int refcountOrder)
    {
        CheckOrder(refcountOrder);
        switch (refcountOrder)
        {
            case 3: return block[checked((int)index)];
            case 4: return BinaryPrimitives.ReadUInt16BigEndian(block[checked((int)(index * 2))..]);
            case 5: return BinaryPrimitives.ReadUInt32BigEndian(block[checked((int)(index * 4))..]);
            case 6: return BinaryPrimitives.ReadUInt64BigEndian(block[checked((int)(index * 8))..]);
            default:
                int bits = 1 << refcountOrder;
                long p = index * bits;
                return (uint)(block[checked((int)(p >> 3))] >> (int)(p & 7)) & ((1u << bits) - 1);
        }
    }

    /// <summary>Writes refcount <paramref name="index"/>.</summary>
    /// <param name="block">The block bytes.</param>
    /// <param name="index">Entry index.</param>
    /// <param name="refcountOrder">log2 of the width.</param>
    /// <param name="value">New refcount.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="value"/> exceeds <see cref="MaxValue"/>.</exception>
    public static void Set(Span<byte> block, long index, int refcountOrder, ulong value)
    {
        if (value > MaxValue(refcountOrder))
            throw new ArgumentOutOfRangeException(nameof(value), value, $"refcount exceeds the {1 << refcountOrder}-bit maximum {MaxValue(refcountOrder)}");
        switch (refcountOrder)
        {
            case 3: block[checked((int)index)] = (byte)value; break;
            case 4: BinaryPrimitives.WriteUInt16BigEndian(block[checked((int)(index * 2))..], (ushort)value); break;
            case 5: BinaryPrimitives.WriteUInt32BigEndian(block[checked((int)(index * 4))..], (uint)value); break;
            case 6: BinaryPrimitives.WriteUInt64BigEndian(block[checked((int)(index * 8))..], value); break;
            default:
                int bits = 1 << refcountOrder;
                long p = index * bits;
                int shift = (int)(p & 7);
                int mask = ((1 << bits) - 1) << shift;
                ref byte b = ref block[checked((int)(p >> 3))];
                b = (byte)((b & ~mask) | ((int)value << shift));
                break;
        }
    }

    private static void CheckOrder(int refcountOrder)
    {
        if ((uint)refcountOrder > Qcow2Header.MaxRefcountOrder)
            throw new ArgumentOutOfRangeException(nameof(refcountOrder), refcountOrder, "refcount_order must be 0-6");
    }
}
