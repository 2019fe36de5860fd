using Qcow2Actors.Engine.Metadata;

namespace Qcow2Actors.Engine.Write;

// Every request carries its own TaskCompletionSource (created with
// RunContinuationsAsynchronously) instead of using Ask: measured here, Tell + TCS does
// several times the round trips per second of Ask, and the caller's continuation never
// runs on an actor's thread.

/// <summary>
/// Guest write of bytes that all fall inside one L2 table's range; <paramref name="Space"/> is the
/// quota reserved for the whole request (null without a quota), which the table operation draws from.
/// </summary>
internal sealed record WriteOp(long Offset, ReadOnlyMemory<byte> Data, TaskCompletionSource Done, SpaceReservation? Space = null);

/// <summary>Guest write-zeroes inside one L2 table's range; <paramref name="Unmap"/> allows freeing clusters.</summary>
internal sealed record ZeroOp(long Offset, long Length, bool Unmap, TaskCompletionSource Done, SpaceReservation? Space = null);

/// <summary>Guest discard inside one L2 table's range.</summary>
internal sealed record DiscardOp(long Offset, long Length, TaskCompletionSource Done, bool Deallocate = false);

/// <summary>Writes one whole guest cluster compressed (falls back to a normal write if it does not shrink).</summary>
internal sealed record CompressedWriteOp(long Offset, ReadOnlyMemory<byte> Cluster, TaskCompletionSource Done, SpaceReservation? Space = null);

/// <summary>Finish the current operation, then hold every later mutation until <see cref="ResumeMutations"/>.</summary>
internal sealed record PauseMutations(TaskCompletionSource Done);

/// <summary>Let held mutations run again.</summary>
internal sealed record ResumeMutations;

/// <summary>Write the table in place if dirty (checkpoint; the caller flushes afterwards).</summary>
internal sealed record WriteBackTable(TaskCompletionSource Done);

/// <summary>A run of clusters from the refcount actor.</summary>
internal readonly record struct Allocation(long Offset, bool Fresh);

/// <summary>Allocate <paramref name="Count"/> contiguous clusters at refcount 1.</summary>
internal sealed record AllocateClusters(int Count, TaskCompletionSource<Allocation> Reply);

/// <summary>Allocate <paramref name="Length"/> bytes for compressed data (may share a host cluster with other compressed data).</summary>
internal sealed record AllocateCompressedBytes(int Length, TaskCompletionSource<long> Reply);

/// <summary>Add <paramref name="Delta"/> to the refcount of each host cluster; replies with the new counts.</summary>
internal sealed record AdjustRefcounts(long[] Clusters, int Delta, TaskCompletionSource<ulong[]>? Reply);

/// <summary>Read the refcounts of host clusters.</summary>
internal sealed record GetRefcounts(long[] Clusters, TaskCompletionSource<ulong[]> Reply);

/// <summary>Write dirty refcount blocks and the table in place; replies with the table's location.</summary>
internal sealed record WriteBackRefcounts(TaskCompletionSource<(long Offset, int Clusters)> Reply);

/// <summary>Punch the data-file clusters whose discard is now durable (external data file images).</summary>
internal sealed record PunchDataClusters;

/// <summary>Quarantined clusters whose freeing is now durable.</summary>
internal sealed record ReleaseQuarantine(long[] Clusters);

/// <summary>Guest flush: data durable, then the journal batch durable, then acknowledge.</summary>
internal sealed record FlushRequest(TaskCompletionSource Done);

/// <summary>Delete journal messages up to the last persisted one (their effect is now in place on disk).</summary>
internal sealed record TruncateJournal(TaskCompletionSource Done);

/// <summary>The journal actor's recovered batches, sent to its parent once replay finishes.</summary>
internal sealed record JournalRecovered(IReadOnlyList<JournalBatch> Batches);

/// <summary>Run a checkpoint now (size or time threshold reached, or on request).</summary>
internal sealed record CheckpointRequest(TaskCompletionSource? Done);

/// <summary>Close the image cleanly: checkpoint, clear the dirty bits, stop the actors.</summary>
internal sealed record CloseRequest(TaskCompletionSource Done);

/// <summary>Route an operation to the L2 table actor for <paramref name="L1Index"/>, creating it if needed.</summary>
internal sealed record RouteToTable(int L1Index, object Message);

/// <summary>Passivation: stop if the table is clean (its state is on disk), else answer <see cref="StayAlive"/>.</summary>
internal sealed record StopIfClean(int L1Index, Akka.Actor.IActorRef Parent);

/// <summary>The table actor was dirty and keeps running; held messages may go to it.</summary>
internal sealed record StayAlive(int L1Index, Akka.Actor.IActorRef Table);

/// <summary>A table actor pinned a table and the image's dirty tables now exceed its L2 cache size: a checkpoint is due.</summary>
internal sealed class TablesOverCache
{
    public static readonly TablesOverCache Instance = new();
}

/// <summary>Grow the virtual disk to <paramref name="NewSize"/> bytes (growing the L1 table if needed).</summary>
internal sealed record ResizeRequest(long NewSize, TaskCompletionSource Done);

/// <summary>
/// Run <paramref name="Edit"/> on the image file with the image to itself: every table paused and the
/// image checkpointed as at a clean close (tables, refcounts and header on disk, journal empty), then,
/// when <paramref name="ChangesImage"/>, every table actor stopped, the edit run under the engine's own
/// dirty bit and the in-memory state reloaded from the file. The caller keeps requests out meanwhile.
/// </summary>
internal sealed record OnlineEditRequest(Func<Device.IBlockDevice, object?> Edit, bool ChangesImage, TaskCompletionSource<object?> Done);

/// <summary>A clean table actor agreed to stop; the parent stops it (messages for it are held meanwhile).</summary>
internal sealed record ReadyToStop(int L1Index, Akka.Actor.IActorRef Table);

/// <summary>Runs an edit of the image's bitmaps on the image actor (their owner), then a checkpoint that stores it.</summary>
internal sealed record BitmapEditRequest(Func<Bitmaps.BitmapSet, Task> Edit, TaskCompletionSource Done);

/// <summary>
/// A write is about to touch [<paramref name="Offset"/>, +<paramref name="Length"/>), some granule of
/// which is not durable in a tracked bitmap: <paramref name="Done"/> completes once the journal holds it.
/// </summary>
internal sealed record BitmapTouch(long Offset, long Length, TaskCompletionSource Done);

/// <summary>A checkpoint stores the bitmaps: journal no granule until released (answered once none is being journaled).</summary>
internal sealed record HoldBitmapJournal(TaskCompletionSource Done);

/// <summary>The checkpoint is over: journal the granules that waited.</summary>
internal sealed record ReleaseBitmapJournal;

/// <summary>
/// Persist bitmap evidence as a batch of its own, at once: no data sync (the data it covers is not
/// written yet) and none of the pending metadata records (whose data may not be durable yet).
/// </summary>
internal sealed record PersistBitmapRecords(IReadOnlyList<Metadata.MetadataRecord> Records, TaskCompletionSource Done);
