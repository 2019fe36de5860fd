using System.Buffers;

namespace Qcow2Actors.Engine.Metadata;

/// <summary>
/// The records gathered since the previous flush, encoded as they arrive (the journal's own record encoding,
/// <see cref="JournalBatchSerializer"/>) into a list of chunks, and persisted by the flush as its one message.
/// It reads back as a <see cref="JournalBatch"/>: the bytes are the same.
/// </summary>
/// <remarks>
/// Why not keep the record objects until the flush: an allocating write's two records are ~46 bytes encoded
/// against ~100 as objects plus their list slot, which the GC also copies through its generations while they wait,
/// and a flush then built the whole batch twice more as contiguous arrays (the encoding, and the journal file's write
/// buffer). A guest that flushes once after 65,536 allocating writes cost serve ~15 MiB of peak RSS that way; this
/// costs the ~3 MiB of chunks, which the file journal writes as they are (<see cref="JournalBatchSerializer.ToSequence"/>).
/// Chunks grow from <see cref="FirstChunkBytes"/> to <see cref="MaxChunkBytes"/>: a flush of a few records allocates
/// a small array, a long batch mostly large ones, which the GC allocates in place and never copies. A record never
/// spans two chunks. Not thread-safe: appends run under the journal inbox's lock; once taken for a flush, the batch is never changed.
/// </remarks>
internal sealed class PendingJournalBatch
{
    /// <summary>Size of the first chunk.</summary>
    public const int FirstChunkBytes = 1024;

    /// <summary>Most a chunk grows to (unless one record needs more); at the large object threshold or above it.</summary>
    public const int MaxChunkBytes = 128 * 1024;

    private readonly List<ReadOnlyMemory<byte>> _full = []; // earlier chunks, cut to what they hold
    private byte[]? _current;
    private int _used;
    private List<TableKind>? _newTables;

    /// <summary>Records appended so far.</summary>
    public int Count { get; private set; }

    /// <summary>Bytes the records take encoded (the batch header not included).</summary>
    public long RecordBytes { get; private set; }

    /// <summary>The kinds of the <see cref="NewTable"/> records appended, in order (fault-injection hooks announce them).</summary>
    public IReadOnlyList<TableKind> NewTables => _newTables ?? (IReadOnlyList<TableKind>)[];

    /// <summary>Encodes <paramref name="records"/> at the end of the batch: all of them, or (an unknown record) none.</summary>
    /// <exception cref="ArgumentException">A record the journal cannot encode; the batch is unchanged.</exception>
    public void Add(IReadOnlyList<MetadataRecord> records)
    {
        foreach (var r in records) JournalBatchSerializer.RecordLength(r); // throws before anything is added
        foreach (var r in records)
        {
            int length = JournalBatchSerializer.RecordLength(r);
            if (_current is null || _current.Length - _used < length) NewChunk(length);
            JournalBatchSerializer.WriteRecord(_current.AsSpan(_used), r);
            _used += length;
            RecordBytes += length;
            Count++;
            if (r is NewTable table) (_newTables ??= []).Add(table.Kind);
        }
    }

    /// <summary>The encoded batch (header, then the records) as the chunks hold it, without copying them.</summary>
    public ReadOnlySequence<byte> ToSequence()
    {
        var header = new byte[JournalBatchSerializer.HeaderLength];
        JournalBatchSerializer.WriteHeader(header, Count);
        var first = new Segment(header, 0);
        var last = first;
        foreach (var chunk in _full) last = last.Append(chunk);
        if (_current is not null) last = last.Append(_current.AsMemory(0, _used));
        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    /// <summary>The records decoded again (an in-memory journal that keeps objects replays this form).</summary>
    public JournalBatch ToBatch() => JournalBatchSerializer.Decode(ToSequence().ToArray());

    [System.Diagnostics.CodeAnalysis.MemberNotNull(nameof(_current))]
    private void NewChunk(int atLeast)
    {
        int size = FirstChunkBytes;
        if (_current is not null)
        {
            _full.Add(_current.AsMemory(0, _used));
            size = Math.Min(MaxChunkBytes, _current.Length * 2);
        }
        _current = GC.AllocateUninitializedArray<byte>(Math.Max(size, atLeast));
        _used = 0;
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }
}
