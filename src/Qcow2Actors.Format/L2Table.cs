using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Qcow2Actors.Format;

/// <summary>Entry access in an L2 table (one cluster of 8- or 16-byte big-endian entries).</summary>
public static class L2Table
{
    /// <summary>Bytes per entry.</summary>
    /// <param name="extended">Whether entries are extended.</param>
    public static int EntrySize(bool extended) => extended ? L2Entry.ExtendedSize : L2Entry.StandardSize;

    /// <summary>Reads entry <paramref name="index"/>.</summary>
    /// <param name="table">The table bytes.</param>
    /// <param name="index">Entry index.</param>
    /// <param name="extended">Whether entries are 16 bytes (word 0 then the subcluster bitmap).</param>
    public static L2Entry ReadEntry(ReadOnlySpan<byte> table, int index, bool extended)
    {
        int at = index * EntrySize(extended);
        ulong w0 = BinaryPrimitives.ReadUInt64BigEndian(table[at..]);
        return extended ? new L2Entry(w0, BinaryPrimitives.ReadUInt64BigEndian(table[(at + 8)..])) : new L2Entry(w0);
    }

    /// <summary>Writes entry <paramref name="index"/>.</summary>
    /// <param name="table">The table bytes.</param>
    /// <param name="index">Entry index.</param>
    /// <param name="extended">Whether entries are 16 bytes.</param>
    /// <param name="entry">The entry; its bitmap must be 0 for standard tables.</param>
    public static void WriteEntry(Span<byte> table, int index, bool extended, L2Entry entry)
    {
        int at = index * EntrySize(extended);
        BinaryPrimitives.WriteUInt64BigEndian(table[at..], entry.Word0);
        if (extended) BinaryPrimitives.WriteUInt64BigEndian(table[(at + 8)..], entry.Bitmap);
        else if (entry.Bitmap != 0) throw new ArgumentException("a standard L2 table cannot store a subcluster bitmap", nameof(entry));
    }

    /// <summary>
    /// Decodes a whole table as raw 64-bit words (entry words, and for extended entries the bitmap
    /// after each), for a reader that keeps the table in memory and classifies entries with <see cref="L2Entry"/>.
    /// </summary>
    /// <param name="table">The table bytes (at least 8 × <c>words.Length</c>).</param>
    /// <param name="words">Destination, one per 8 bytes.</param>
    public static void DecodeWords(ReadOnlySpan<byte> table, Span<ulong> words)
    {
        var source = MemoryMarshal.Cast<byte, ulong>(table[..(words.Length * 8)]);
        if (BitConverter.IsLittleEndian) BinaryPrimitives.ReverseEndianness(source, words);
        else source.CopyTo(words);
    }

    /// <summary>Encodes raw words as <see cref="DecodeWords"/> decodes them (big endian).</summary>
    /// <param name="words">The words.</param>
    /// <param name="table">Destination (at least 8 × <c>words.Length</c> bytes).</param>
    public static void EncodeWords(ReadOnlySpan<ulong> words, Span<byte> table)
    {
        var destination = MemoryMarshal.Cast<byte, ulong>(table[..(words.Length * 8)]);
        if (BitConverter.IsLittleEndian) BinaryPrimitives.ReverseEndianness(words, destination);
        else words.CopyTo(destination);
    }
}
