using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Chaos.PowerLoss;

/// <summary>One mutating call the engine made on the image file, with what the journal held when it was issued.</summary>
/// <param name="Sequence">Issue order, from 1.</param>
/// <param name="IsFlush">A flush: every earlier entry is durable once it returns.</param>
/// <param name="Offset">Where a write lands.</param>
/// <param name="Data">A write's bytes; null for a flush or a length change.</param>
/// <param name="NewLength">A length change's new length; -1 otherwise.</param>
/// <param name="Journal">The journal file's bytes when the call was issued (null: no journal file). Shared between entries while it does not change.</param>
/// <param name="Completed">Workload ops completed when the call was issued.</param>
internal sealed record LoggedCall(long Sequence, bool IsFlush, long Offset, byte[]? Data, long NewLength, byte[]? Journal, int Completed)
{
    public bool IsWrite => Data is not null;
}

/// <summary>
/// The image file of a power-loss run: an in-memory disk that logs every write, length change
/// and flush the engine issues, each with a copy of the journal file as it was at that instant
/// (the journal is a real file: it is fsynced on every append, so what it holds at any instant is
/// what a power cut then would leave of it, give or take its torn last append, which replay drops).
/// The log is the raw material of every crash state of the run.
/// </summary>
internal sealed class RecordingDisk : BlockDevice
{
    private readonly Lock _gate = new();
    private readonly Devices.ByteImage _current;
    private readonly string _journalPath;
    private readonly Func<int> _completed;
    private readonly List<LoggedCall> _log = [];
    private byte[]? _lastJournal;

    public RecordingDisk(ReadOnlySpan<byte> content, string name, string journalPath, Func<int> completed)
    {
        _current = new Devices.ByteImage(content);
        Initial = content.ToArray();
        Name = name;
        _journalPath = journalPath;
        _completed = completed;
    }

    /// <summary>The image as it was before the first logged call (durable).</summary>
    public byte[] Initial { get; }

    public override string Name { get; }

    public override bool IsReadOnly => false;

    public override long Length
    {
        get { lock (_gate) return _current.Length; }
    }

    /// <summary>The calls so far, in issue order.</summary>
    public IReadOnlyList<LoggedCall> Log
    {
        get { lock (_gate) return [.. _log]; }
    }

    protected override ValueTask<int> ReadCoreAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        lock (_gate) return new(_current.Read(buffer.Span, offset));
    }

    protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            var (journal, completed) = Instant();
            _log.Add(new LoggedCall(_log.Count + 1, false, offset, buffer.ToArray(), -1, journal, completed));
            _current.Write(buffer.Span, offset);
        }
        return ValueTask.CompletedTask;
    }

    protected override ValueTask FlushCoreAsync(CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            var (journal, completed) = Instant();
            _log.Add(new LoggedCall(_log.Count + 1, true, 0, null, -1, journal, completed));
        }
        return ValueTask.CompletedTask;
    }

    public override void SetLength(long length)
    {
        lock (_gate)
        {
            var (journal, completed) = Instant();
            _log.Add(new LoggedCall(_log.Count + 1, false, 0, null, length, journal, completed));
            _current.SetLength(length);
        }
    }

    /// <summary>
    /// The instant a call is issued: the ops acknowledged, then the journal. In that order because the
    /// engine persists a flush's batch (and a FUA write's) before it acknowledges that op, so a count read
    /// first never counts a flush whose batch the journal read after it lacks. Read the other way round, an
    /// acknowledgement landing between the two reads (a background call, such as the punch of freed
    /// clusters, issued while a flush's batch is being persisted) paired a journal without that batch with a
    /// model that counts the flush as done: a state no disk can hold, judged by a model that demands the
    /// batch (a flushed write-zeroes "lost" in one 100,000-state run; see
    /// bench/results/power-loss-2026-12-01-rootcause.md). A journal newer than the count is a state a disk
    /// can hold: batches are persisted only after their device flush, which was logged before this call (the
    /// lock is held), so their records come from ops the count includes as done or in flight.
    /// </summary>
    private (byte[]? Journal, int Completed) Instant()
    {
        var completed = _completed();
        return (Journal(), completed);
    }

    /// <summary>The journal now; the previous copy when the bytes are the same, so an unchanged journal costs nothing.</summary>
    private byte[]? Journal()
    {
        byte[] now;
        try
        {
            now = File.ReadAllBytes(_journalPath);
        }
        catch (FileNotFoundException)
        {
            return _lastJournal = null;
        }
        if (_lastJournal is not null && _lastJournal.AsSpan().SequenceEqual(now)) return _lastJournal;
        return _lastJournal = now;
    }
}
