using Akka.Actor;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Read;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Write;

// Checkpoints (tables and refcounts written in place, header clean, journal truncated) and resize: both pause
// every live table actor first, so nothing changes the metadata they write.
internal sealed partial class ImageActor
{
    private bool _checkpointQueued;

    // Header fields whose tables exist only in memory and the journal until the next
    // checkpoint writes them in place (resize): the header on disk must not point there earlier.
    private Action<Qcow2Header>? _pendingHeader;

    private async Task<List<IActorRef>> PauseTablesAsync()
    {
        var tables = _tables.Values.ToList();
        await Task.WhenAll(tables.Select(t => Send(t, d => new PauseMutations(d))));
        // Barrier: every release the tables sent before pausing has reached the refcount actor.
        var barrier = new TaskCompletionSource<ulong[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        _ctx!.Refcounts.Tell(new GetRefcounts([], barrier));
        await barrier.Task;
        return tables;
    }

    private async Task ResizeAsync(long newSize)
    {
        var ctx = _ctx!;
        ctx.ThrowIfReadOnly();
        var view = ctx.Layer.Views.Current;
        var g = ctx.Geometry;
        if (newSize < view.VirtualSize)
            throw new NotSupportedException($"shrinking '{_path}' from {view.VirtualSize} to {newSize} bytes is not supported");
        if (newSize % 512 != 0) throw new ArgumentException("Image size must be a multiple of 512 bytes");
        long required = Qcow2Header.RequiredL1Size(newSize, g.ClusterBits, g.ExtendedL2);
        if (required > Qcow2Header.MaxL1Size)
            throw new ArgumentException($"{newSize} bytes need {required} L1 entries, above QEMU's limit of {Qcow2Header.MaxL1Size}");
        if (ctx.Bitmaps is { } bitmaps && bitmaps.Entries.Count > 0)
        {
            // Every bitmap grows with the disk and is stored by the checkpoint below: QEMU refuses a
            // bitmap whose table does not fit the disk size. One in use elsewhere cannot be resized.
            if (bitmaps.Entries.FirstOrDefault(e => e.Inconsistent) is { } bad)
                throw new InvalidOperationException($"Cannot resize '{_path}': bitmap '{bad.Name}' is inconsistent (remove it first)");
            await _io.RunAsync(async () =>
            {
                foreach (var e in bitmaps.Entries) await bitmaps.GetBitsAsync(e, default);
                return true;
            });
        }
        var tables = await PauseTablesAsync();
        try
        {
            var records = new List<Metadata.MetadataRecord>();
            // Read again now that the tables are paused: until then, writes sent on their routes may have published new L1 entries.
            view = ctx.Layer.Views.Current;
            var l1 = view.CopyL1();
            long l1Offset = ctx.Header.L1TableOffset;
            int l1Size = ctx.Header.L1Size;
            long[] release = [];
            if (required > l1.Length)
            {
                // L1 growth: a new, larger contiguous table; the old one is freed once it is no longer referenced.
                long bytes = (required * 8 + g.ClusterSize - 1) & ~(g.ClusterSize - 1);
                var alloc = new TaskCompletionSource<Allocation>(TaskCreationOptions.RunContinuationsAsynchronously);
                ctx.Refcounts.Tell(new AllocateClusters((int)(bytes / g.ClusterSize), alloc));
                long offset = (await alloc.Task).Offset;
                ctx.CheckDataWrite(offset, bytes);
                Array.Resize(ref l1, (int)required);
                records.Add(new Metadata.NewTable(Metadata.TableKind.L1, offset, bytes));
                for (int i = 0; i < l1.Length; i++)
                    if (l1[i] != 0) records.Add(new Metadata.SetL1Entry(i, l1[i]));
                records.Add(new Metadata.SetHeaderField(Metadata.HeaderField.L1TableOffset, (ulong)offset));
                records.Add(new Metadata.SetHeaderField(Metadata.HeaderField.L1Size, (ulong)required));
                if (l1Offset != 0 && l1Size > 0)
                {
                    long oldBytes = ((long)l1Size * 8 + g.ClusterSize - 1) & ~(g.ClusterSize - 1);
                    ctx.Metadata.Remove(l1Offset, oldBytes, MetadataKind.L1Table);
                    release = [.. Enumerable.Range(0, (int)(oldBytes / g.ClusterSize)).Select(k => (l1Offset >> g.ClusterBits) + k)];
                }
                ctx.Metadata.Add(offset, bytes, MetadataKind.L1Table);
                l1Offset = offset;
                l1Size = (int)required;
            }
            records.Add(new Metadata.SetHeaderField(Metadata.HeaderField.Size, (ulong)newSize));
            ctx.JournalRecords.Append(records);
            if (release.Length > 0) ctx.Refcounts.Tell(new AdjustRefcounts(release, -1, null));
            ctx.PublishView(new ImageView(g, newSize, l1));
            ctx.Bitmaps?.Resize(newSize);
            long size = newSize, newOffset = l1Offset;
            int newL1Size = l1Size;
            _pendingHeader = h => { h.Size = size; h.L1TableOffset = newOffset; h.L1Size = newL1Size; };
            await CheckpointAsync(closing: false, tables);
        }
        finally
        {
            foreach (var t in tables) t.Tell(new ResumeMutations());
        }
    }

    // closing: forced (a close, or an online edit that needs the image checkpointed); finalClose: the
    // image closes, so tracked bitmaps are stored for good (in-use cleared) instead of kept tracked.
    private async Task CheckpointAsync(bool closing, List<IActorRef>? paused = null, bool finalClose = false)
    {
        _checkpointQueued = false;
        var ctx = _ctx!;
        // A read-only image (failed fsync or journal write) keeps its journal for recovery; its
        // journal actor may be gone, so nothing here may wait on it.
        if (ctx.ReadOnlyReason is { } reason)
        {
            if (closing || _pendingHeader is not null) throw new IOException($"'{_path}' is read-only: {reason}");
            return;
        }
        var tables = paused ?? await PauseTablesAsync();
        bool bitmapsHeld = false;
        try
        {
            if (ctx.Bitmaps is not null && !ctx.BitmapJournal.IsNobody())
            {
                // No granule is journaled from before the bits are stored until the journal is emptied:
                // one journaled meanwhile would be emptied away while missing from what was stored.
                await Send(ctx.BitmapJournal, d => new HoldBitmapJournal(d));
                bitmapsHeld = true;
            }
            if (!ctx.BitsOnDisk && ctx.Layer.L2Tables.PinnedCount == 0 && !closing && _pendingHeader is null && ctx.Bitmaps?.NeedsStore != true) return;
            // Tracked bitmaps go to new clusters now; the clean header below switches to them, and
            // their old clusters are released in the same checkpoint's refcounts.
            if (finalClose || ctx.Bitmaps?.NeedsStore == true)
            {
                var oldBitmapClusters = await Bitmaps.BitmapWriter.StoreAsync(ctx, _io, finalClose);
                if (oldBitmapClusters.Length > 0)
                {
                    // Awaited: the refcount actor then has handed the freeing records to the journal before
                    // the flush below, so their quarantine ends within this checkpoint. Left to a later flush,
                    // it would end after an online edit that may reuse (and the punch then zero) those clusters.
                    var adjusted = new TaskCompletionSource<ulong[]>(TaskCreationOptions.RunContinuationsAsynchronously);
                    ctx.Refcounts.Tell(new AdjustRefcounts(oldBitmapClusters, -1, adjusted));
                    await adjusted.Task;
                }
            }
            await Send(ctx.Journal, d => new FlushRequest(d));
            await Task.WhenAll(tables.Select(t => Send(t, d => new WriteBackTable(d))));
            var table = new TaskCompletionSource<(long Offset, int Clusters)>(TaskCreationOptions.RunContinuationsAsynchronously);
            ctx.Refcounts.Tell(new WriteBackRefcounts(table));
            var (offset, clusters) = await table.Task;
            if (_pendingHeader is { } pending)
            {
                ctx.ChangeHeader(pending);
                _pendingHeader = null;
            }
            var view = ctx.Layer.Views.Current;
            // Blocking writes and two fdatasyncs: on an I/O thread (the tables are paused meanwhile).
            await _io.Run(() =>
            {
                ctx.CheckTableWrite(ctx.Header.L1TableOffset, (long)ctx.Header.L1Size * 8, MetadataKind.L1Table);
                RecordApplier.WriteL1(ctx.Device, ctx.Header, view.L1);
                ctx.ChangeHeader(h => { h.RefcountTableOffset = offset; h.RefcountTableClusters = clusters; });
                // Everything is written back: the file loses the tail the allocator grew it by.
                if (finalClose) ctx.Allocator?.TrimGrowth();
                ctx.Device.Flush();
                // Tables are in place and durable: the header may point at them and say "clean" before
                // the journal is truncated (a crash in between leaves stale records a clean header ignores).
                ctx.MarkClean();
                ctx.Device.Flush();
            });
            await Send(ctx.Journal, d => new TruncateJournal(d));
            // The header points at the stored bitmaps and the journal is empty: what was stored is what is durable.
            ctx.Bitmaps?.StoreDone();
            ctx.Metrics.Checkpoint();
        }
        catch (Exception ex) when (ex is IOException)
        {
            ctx.Fail($"checkpoint failed: {ex.Message}");
            throw;
        }
        finally
        {
            if (bitmapsHeld) ctx.BitmapJournal.Tell(new ReleaseBitmapJournal());
            if (!closing && paused is null) foreach (var t in tables) t.Tell(new ResumeMutations());
        }
    }

    private static Task Send(IActorRef target, Func<TaskCompletionSource, object> message)
    {
        var tcs = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        target.Tell(message(tcs));
        return tcs.Task;
    }
}
