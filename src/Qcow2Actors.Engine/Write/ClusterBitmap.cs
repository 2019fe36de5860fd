using System.Numerics;
using System.Runtime.CompilerServices;

namespace Qcow2Actors.Engine.Write;

/// <summary>
/// One bit per host cluster, read lock-free by any thread, changed by one writer at a time
/// (the caller holds a lock). Bits live in chunks allocated on first use, so an image whose
/// metadata sits in a few places costs a few chunks; clusters beyond what chunks index (a
/// table at an absurd offset in a damaged image) go to a small sorted set read under a lock.
/// </summary>
internal sealed class ClusterBitmap
{
    // 4096 words of 64 bits: one chunk covers 2^18 clusters (16 GiB of 64 KiB clusters), 32 KiB of memory.
    private const int ChunkBits = 18;
    private const int WordsPerChunk = 1 << (ChunkBits - 6);
    // Chunk slots the directory may grow to (2^34 clusters: 8 TiB even at 512-byte clusters).
    private const int MaxChunks = 1 << 16;
    private const long FarStart = (long)MaxChunks << ChunkBits;

    private volatile long[]?[] _chunks = [];
    private readonly SortedSet<long> _far = new();
    private volatile bool _anyFar;

    /// <summary>Sets cluster <paramref name="c"/>'s bit. Callers serialize Set and Clear.</summary>
    public void Set(long c)
    {
        if (c >= FarStart)
        {
            lock (_far) _far.Add(c);
            _anyFar = true;
            return;
        }
        int ci = (int)(c >> ChunkBits);
        var chunks = _chunks;
        if (ci >= chunks.Length)
        {
            var grown = new long[]?[Math.Min(MaxChunks, Math.Max(ci + 1, chunks.Length * 2))];
            chunks.CopyTo(grown, 0);
            _chunks = grown;
            chunks = grown;
        }
        var chunk = chunks[ci];
        if (chunk is null)
        {
            chunk = new long[WordsPerChunk];
            Volatile.Write(ref chunks[ci], chunk);
        }
        Interlocked.Or(ref chunk[(int)((c >> 6) & (WordsPerChunk - 1))], 1L << (int)(c & 63));
    }

    /// <summary>Clears cluster <paramref name="c"/>'s bit. Callers serialize Set and Clear.</summary>
    public void Clear(long c)
    {
        if (c >= FarStart)
        {
            lock (_far) _far.Remove(c);
            return;
        }
        var chunks = _chunks;
        int ci = (int)(c >> ChunkBits);
        if (ci >= chunks.Length || chunks[ci] is not { } chunk) return;
        Interlocked.And(ref chunk[(int)((c >> 6) & (WordsPerChunk - 1))], ~(1L << (int)(c & 63)));
    }

    /// <summary>The lowest cluster in [first, last] whose bit is set, or -1. Lock-free below the far range.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long FirstSet(long first, long last)
    {
        if ((first >> 6) != (last >> 6) || last >= FarStart) return FirstSetInRange(first, last);
        // One word: what every write of a cluster or less asks. A chunk is published complete
        // (Volatile.Write), and a load through the reference just read sees it (dependent loads).
        var chunks = _chunks;
        long ci = first >> ChunkBits;
        if (ci >= chunks.Length || chunks[ci] is not { } chunk) return -1;
        ulong bits = (ulong)Volatile.Read(ref chunk[(int)((first >> 6) & (WordsPerChunk - 1))])
            & (~0UL << (int)(first & 63)) & (~0UL >> (63 - (int)(last & 63)));
        return bits == 0 ? -1 : (first & ~63L) + BitOperations.TrailingZeroCount(bits);
    }

    private long FirstSetInRange(long first, long last)
    {
        var chunks = _chunks;
        long c = first;
        long nearLast = Math.Min(last, FarStart - 1);
        while (c <= nearLast)
        {
            long ci = c >> ChunkBits;
            if (ci >= chunks.Length) break;
            var chunk = chunks[ci];
            if (chunk is null)
            {
                c = (ci + 1) << ChunkBits;
                continue;
            }
            ulong word = (ulong)Volatile.Read(ref chunk[(int)((c >> 6) & (WordsPerChunk - 1))]);
            word &= ~0UL << (int)(c & 63);
            long wordLast = c | 63;
            if (nearLast < wordLast) word &= ~0UL >> (63 - (int)(nearLast & 63));
            if (word != 0) return (c & ~63L) + BitOperations.TrailingZeroCount(word);
            c = wordLast + 1;
        }
        if (!_anyFar || last < FarStart) return -1;
        lock (_far)
        {
            var view = _far.GetViewBetween(Math.Max(first, FarStart), last);
            return view.Count > 0 ? view.Min : -1;
        }
    }
}
