namespace Qcow2Actors.Format;

/// <summary>
/// A whole L1 table (active or a snapshot's) as 64-bit big-endian entries, for code that keeps the
/// table in memory as raw words and classifies them with <see cref="L1Entry"/>.
/// </summary>
public static class L1Table
{
    /// <summary>Decodes <c>table.Length / 8</c> entries.</summary>
    /// <param name="table">The table bytes; a trailing partial entry is ignored.</param>
    public static ulong[] Decode(ReadOnlySpan<byte> table)
    {
        var words = new ulong[table.Length / L1Entry.Size];
        L2Table.DecodeWords(table, words);
        return words;
    }

    /// <summary>Encodes <paramref name="entries"/> into the first <c>8 × entries.Length</c> bytes of <paramref name="table"/>.</summary>
    /// <param name="entries">Raw entry words.</param>
    /// <param name="table">Destination.</param>
    /// <param name="clearCopied">Store every entry without its COPIED flag (a snapshot's L1 table: its tables are shared).</param>
    public static void Encode(ReadOnlySpan<ulong> entries, Span<byte> table, bool clearCopied = false)
    {
        if (!clearCopied)
        {
            L2Table.EncodeWords(entries, table);
            return;
        }
        for (int i = 0; i < entries.Length; i++) new L1Entry(entries[i]).WithCopied(false).Write(table, i);
    }
}
