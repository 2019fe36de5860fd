using System.Buffers.Binary;
using System.Numerics;

namespace Qcow2Actors.Engine.Bitmaps;

/// <summary>
/// The bits of one dirty bitmap in memory: bit i covers guest bytes [i &lt;&lt; granularityBits, +granularity).
/// Writers set bits lock-free (an atomic OR per 64-bit word, no allocation); bits are never
/// cleared while writers run, so a reader that copies the words sees every bit set before it started.
/// On disk (FORMAT.md §9) the same bits are little-endian words: bit i is bit i % 8 of byte i / 8.
/// </summary>
internal sealed class DirtyBitmap
{
    private readonly ulong[] _words;

    public DirtyBitmap(int granularityBits, long virtualSize)
    {
        GranularityBits = granularityBits;
        VirtualSize = virtualSize;
        Bits = (virtualSize + (1L << granularityBits) - 1) >> granularityBits;
        _words = new ulong[(Bits + 63) >> 6];
    }

    public int GranularityBits { get; }

    public long VirtualSize { get; }

    /// <summary>Bits in the bitmap: one per granule of the disk, the last one possibly partial.</summary>
    public long Bits { get; }

    /// <summary>Sets the bits of every granule [offset, offset + length) touches.</summary>
    public void Mark(long offset, long length)
    {
        if (length <= 0) return;
        long first = offset >> GranularityBits;
        long last = Math.Min(Bits - 1, (offset + length - 1) >> GranularityBits);
        if (first > last) return;
        long w0 = first >> 6, w1 = last >> 6;
        ulong headMask = ~0UL << (int)(first & 63);
        ulong tailMask = ~0UL >> (63 - (int)(last & 63));
        if (w0 == w1)
        {
            SetWord(w0, headMask & tailMask);
            return;
        }
        SetWord(w0, headMask);
        for (long w = w0 + 1; w < w1; w++) SetWord(w, ~0UL);
        SetWord(w1, tailMask);
    }

    /// <summary>True when every granule [offset, offset + length) touches is set (lock-free, no allocation).</summary>
    public bool AllSet(long offset, long length)
    {
        if (length <= 0) return true;
        long first = offset >> GranularityBits;
        long last = Math.Min(Bits - 1, (offset + length - 1) >> GranularityBits);
        if (first > last) return true;
        long w0 = first >> 6, w1 = last >> 6;
        ulong headMask = ~0UL << (int)(first & 63);
        ulong tailMask = ~0UL >> (63 - (int)(last & 63));
        if (w0 == w1) return Has(w0, headMask & tailMask);
        if (!Has(w0, headMask) || !Has(w1, tailMask)) return false;
        for (long w = w0 + 1; w < w1; w++)
            if (!Has(w, ~0UL)) return false;
        return true;
    }

    private bool Has(long index, ulong mask) => (Volatile.Read(ref _words[index]) & mask) == mask;

    /// <summary>A copy of the bits as they are now (bits set meanwhile may or may not be in it).</summary>
    public DirtyBitmap Copy() => Resized(VirtualSize);

    private void SetWord(long index, ulong mask)
    {
        // Most writes hit granules already dirty: a plain read avoids the locked instruction.
        if ((Volatile.Read(ref _words[index]) & mask) == mask) return;
        Interlocked.Or(ref _words[index], mask);
    }

    public bool Get(long bit) => (Volatile.Read(ref _words[bit >> 6]) & (1UL << (int)(bit & 63))) != 0;

    /// <summary>Count of set bits.</summary>
    public long Count()
    {
        long n = 0;
        for (int i = 0; i < _words.Length; i++) n += BitOperations.PopCount(Volatile.Read(ref _words[i]));
        return n;
    }

    /// <summary>Clears every bit (only while no writer can set bits).</summary>
    public void ClearAll() => Array.Clear(_words);

    /// <summary>Sets every bit of the disk.</summary>
    public void SetAll() => Mark(0, VirtualSize);

    /// <summary>ORs <paramref name="other"/> (same granularity and size) into this bitmap.</summary>
    public void Or(DirtyBitmap other)
    {
        if (other.GranularityBits != GranularityBits || other._words.Length != _words.Length)
            throw new ArgumentException("bitmaps of different granularity or size cannot be merged", nameof(other));
        for (int i = 0; i < _words.Length; i++)
        {
            ulong w = Volatile.Read(ref other._words[i]);
            if (w != 0) SetWord(i, w);
        }
    }

    /// <summary>A copy for a disk of <paramref name="newSize"/> bytes (at least the current size); the new space clean.</summary>
    public DirtyBitmap Resized(long newSize)
    {
        var copy = new DirtyBitmap(GranularityBits, newSize);
        copy.OrPrefix(this);
        return copy;
    }

    /// <summary>ORs the bits of a smaller (or equal) bitmap of the same granularity into the start of this one.</summary>
    public void OrPrefix(DirtyBitmap smaller)
    {
        if (smaller.GranularityBits != GranularityBits || smaller._words.Length > _words.Length)
            throw new ArgumentException("only a smaller bitmap of the same granularity fits", nameof(smaller));
        for (int i = 0; i < smaller._words.Length; i++)
        {
            ulong w = Volatile.Read(ref smaller._words[i]);
            if (w != 0) SetWord(i, w);
        }
    }

    /// <summary>Bits one bitmap table entry (one cluster of bitmap data) covers.</summary>
    public static long BitsPerCluster(int clusterSize) => (long)clusterSize * 8;

    /// <summary>Entries of the bitmap table for this bitmap in an image of <paramref name="clusterSize"/>.</summary>
    public int TableSize(int clusterSize) => (int)((Bits + BitsPerCluster(clusterSize) - 1) / BitsPerCluster(clusterSize));

    /// <summary>Fills the bits of table entry <paramref name="index"/> from one data cluster's bytes (bits past the disk ignored).</summary>
    public void LoadCluster(int index, ReadOnlySpan<byte> cluster)
    {
        long firstWord = (long)index * cluster.Length / 8;
        int words = (int)Math.Min(cluster.Length / 8, _words.Length - firstWord);
        for (int i = 0; i < words; i++)
            _words[firstWord + i] = BinaryPrimitives.ReadUInt64LittleEndian(cluster[(i * 8)..]);
        MaskTail();
    }

    /// <summary>Sets every bit table entry <paramref name="index"/> covers (an all-ones entry).</summary>
    public void LoadAllOnes(int index, int clusterSize)
    {
        long firstBit = index * BitsPerCluster(clusterSize);
        long bits = Math.Min(BitsPerCluster(clusterSize), Bits - firstBit);
        if (bits > 0) Mark(firstBit << GranularityBits, bits << GranularityBits);
    }

    // The last word may hold bits past the disk (a foreign image's, or an all-ones cluster's): never report them.
    private void MaskTail()
    {
        int tail = (int)(Bits & 63);
        if (tail != 0 && _words.Length > 0) _words[^1] &= ~0UL >> (64 - tail);
    }

    /// <summary>
    /// Writes the bits of table entry <paramref name="index"/> into <paramref name="cluster"/> (zero-padded)
    /// and returns false when all of them are clear (the entry needs no data cluster).
    /// </summary>
    public bool StoreCluster(int index, Span<byte> cluster)
    {
        cluster.Clear();
        long firstWord = (long)index * cluster.Length / 8;
        int words = (int)Math.Max(0, Math.Min(cluster.Length / 8, _words.Length - firstWord));
        bool any = false;
        for (int i = 0; i < words; i++)
        {
            ulong w = Volatile.Read(ref _words[firstWord + i]);
            if (w == 0) continue;
            any = true;
            BinaryPrimitives.WriteUInt64LittleEndian(cluster[(i * 8)..], w);
        }
        return any;
    }

    /// <summary>
    /// Maximal runs of equal bits over [offset, offset + length) (clipped to the disk), in order,
    /// the first and last trimmed to the range.
    /// </summary>
    public IEnumerable<BitmapExtent> Extents(long offset, long length)
    {
        long end = Math.Min(VirtualSize, offset + length);
        long pos = offset;
        while (pos < end)
        {
            long bit = pos >> GranularityBits;
            bool dirty = Get(bit);
            long next = NextDifferent(bit, dirty);
            long runEnd = Math.Min(end, next << GranularityBits);
            yield return new BitmapExtent(pos, runEnd - pos, dirty);
            pos = runEnd;
        }
    }

    // The first bit at or after `bit` whose value differs from `value` (Bits when none).
    private long NextDifferent(long bit, bool value)
    {
        long w = bit >> 6;
        ulong word = Volatile.Read(ref _words[w]);
        if (value) word = ~word;
        word &= ~0UL << (int)(bit & 63);
        while (word == 0)
        {
            if (++w >= _words.Length) return Bits;
            word = Volatile.Read(ref _words[w]);
            if (value) word = ~word;
        }
        return Math.Min(Bits, (w << 6) + BitOperations.TrailingZeroCount(word));
    }
}
