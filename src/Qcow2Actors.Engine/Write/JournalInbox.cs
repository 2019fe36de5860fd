using Akka.Actor;
using Qcow2Actors.Engine.Metadata;

namespace Qcow2Actors.Engine.Write;

/// <summary>
/// The metadata records waiting for an image's next flush: appended, encoded, by whoever made them (the refcount
/// allocator under its lock, the table actors, the image actor), in the order they arrive, and taken whole by the
/// <see cref="JournalActor"/> when a flush starts. The journal actor stays the only one that syncs, persists and
/// acknowledges.
/// </summary>
/// <remarks>
/// Why a lock and not the journal actor's mailbox: an append is a copy of a few dozen bytes, but as a message every
/// allocating write scheduled the journal actor on the thread pool once or twice (its refcount records, its L2 entry),
/// and the hand-off cost more than the append (bench/results/allocwrite-journal-inbox-2026-12-02.md). Order is what the
/// mailbox gave: an append is in before the call returns, so a flush requested after it includes it.
/// </remarks>
internal sealed class JournalInbox
{
    private readonly Lock _lock = new();
    private readonly ImageContext _ctx;
    private PendingJournalBatch _batch = new();
    private List<long> _freed = new();
    private List<TaskCompletionSource> _durable = new();
    private long _sinceCheckpoint;
    private bool _checkpointRequested;

    public JournalInbox(ImageContext ctx) => _ctx = ctx;

    /// <summary>What a flush takes: the records, the clusters they free, and who waits for them to be durable.</summary>
    public sealed record Taken(PendingJournalBatch Batch, List<long> Freed, List<TaskCompletionSource> Durable);

    /// <summary>Records appended and not taken yet.</summary>
    public int Count
    {
        get { lock (_lock) return _batch.Count; }
    }

    /// <summary>
    /// Appends <paramref name="records"/> for the next flush. <paramref name="freed"/>: clusters to release once the records
    /// are durable; <paramref name="durable"/>: completed when they are. A record the journal cannot encode appends nothing,
    /// fails <paramref name="durable"/> and makes the image read-only (through the journal actor), as a failed journal write
    /// does. When enough records gathered since the last checkpoint, the journal actor is asked for one (once).
    /// </summary>
    public void Append(IReadOnlyList<MetadataRecord> records, long[]? freed = null, TaskCompletionSource? durable = null)
    {
        bool checkpoint = false;
        lock (_lock)
        {
            try
            {
                _batch.Add(records);
            }
            catch (ArgumentException ex)
            {
                durable?.TrySetException(ex);
                _ctx.Journal.Tell(new RecordsRejected(ex));
                return;
            }
            _ctx.JournalSpace?.AddPending((long)records.Count * Journal.JournalReservation.RecordBound);
            if (freed is not null) _freed.AddRange(freed);
            if (durable is not null) _durable.Add(durable);
            _sinceCheckpoint += records.Count;
            if (!_checkpointRequested && _sinceCheckpoint >= _ctx.Settings.CheckpointRecords)
                checkpoint = _checkpointRequested = true;
        }
        if (checkpoint) _ctx.Journal.Tell(CheckpointDue.Instance);
    }

    /// <summary>Counts records the journal actor persisted directly (bitmap records) towards the next checkpoint.</summary>
    public void CountPersisted(int records)
    {
        lock (_lock) _sinceCheckpoint += records;
    }

    /// <summary>Everything appended so far, for a flush about to sync; null (nothing taken) when no record waits.</summary>
    public Taken? Take()
    {
        lock (_lock)
        {
            if (_batch.Count == 0) return null;
            var taken = new Taken(_batch, _freed, _durable);
            _batch = new PendingJournalBatch();
            _freed = new List<long>();
            _durable = new List<TaskCompletionSource>();
            return taken;
        }
    }

    /// <summary>A checkpoint emptied the journal: only the records still waiting count towards the next one.</summary>
    public void CheckpointTaken()
    {
        lock (_lock)
        {
            _sinceCheckpoint = _batch.Count;
            _checkpointRequested = false;
        }
    }

    /// <summary>To the journal actor: records arrived that the journal cannot encode.</summary>
    internal sealed record RecordsRejected(ArgumentException Error);

    /// <summary>To the journal actor: enough records gathered since the last checkpoint.</summary>
    internal sealed class CheckpointDue
    {
        public static readonly CheckpointDue Instance = new();
    }
}
