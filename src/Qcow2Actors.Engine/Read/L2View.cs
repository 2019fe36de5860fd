using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Read;

/// <summary>
/// One L2 table as an immutable snapshot: readers map through it without locks while the
/// writer builds the next version beside it and publishes that into the <see cref="L2Cache"/>.
/// Entries are kept raw (validated when a read touches them) so one damaged entry fails
/// only the reads that reach it, naming their guest offset.
/// </summary>
internal sealed class L2View
{
    private readonly ulong[] _words;

    /// <param name="hostOffset">Where the table lives in the image file (the cache key).</param>
    /// <param name="words">Raw entries in table order: one word per entry, or word 0 / word 1 pairs for extended L2. Ownership passes to the view.</param>
    /// <param name="extended">Whether entries are 128-bit.</param>
    public L2View(long hostOffset, ulong[] words, bool extended)
    {
        HostOffset = hostOffset;
        _words = words;
        Extended = extended;
        Count = extended ? words.Length / 2 : words.Length;
    }

    public long HostOffset { get; }
    public bool Extended { get; }
    public int Count { get; }

    /// <summary>Approximate memory cost, for the cache's byte budget.</summary>
    public long SizeInBytes => (long)_words.Length * 8 + 48;

    /// <summary>Word 0: the classic L2 entry (offset, compressed bit 62, COPIED bit 63).</summary>
    public ulong Entry(int index) => Extended ? _words[2 * index] : _words[index];

    /// <summary>Word 1 of an extended entry (subcluster alloc bits 0-31, zero bits 32-63); 0 for standard entries.</summary>
    public ulong Bitmap(int index) => Extended ? _words[2 * index + 1] : 0;

    /// <summary>Parses one L2 cluster as read from disk.</summary>
    public static L2View Parse(ReadOnlySpan<byte> cluster, long hostOffset, bool extended)
    {
        var words = new ulong[cluster.Length / 8];
        L2Table.DecodeWords(cluster, words);
        return new L2View(hostOffset, words, extended);
    }

    /// <summary>
    /// The raw words themselves, for planning on the table without a copy (the write engine's quota
    /// estimate): never written through.
    /// </summary>
    public ulong[] SharedWords => _words;

    /// <summary>A copy of the raw words, for a writer that derives the next version of the table.</summary>
    public ulong[] CopyWords() => (ulong[])_words.Clone();

    /// <summary>Serialises the table back to its on-disk form (big endian, one cluster).</summary>
    public void WriteTo(Span<byte> cluster)
    {
        L2Table.EncodeWords(_words, cluster);
    }
}
