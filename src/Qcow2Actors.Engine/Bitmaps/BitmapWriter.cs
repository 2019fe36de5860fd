using Akka.Actor;
using Qcow2Actors.Engine.Write;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Bitmaps;

/// <summary>
/// Stores the tracked bitmaps of a read-write image, for the image actor (the bitmaps' owner):
/// marks them in use at open, and at a checkpoint or close writes each one's bits to new data
/// and table clusters, a new directory after them, and switches the header's bitmaps extension
/// to it with the checkpoint's clean header; the old clusters are released after. Format encodes
/// every byte; the refcount actor hands out and takes back the clusters (journaled as any other).
/// </summary>
internal static class BitmapWriter
{
    /// <summary>
    /// Sets the in-use flag of every tracked bitmap in the directory on disk, in place, without a
    /// flush (the bitmap journal flushes it with the header's journal-pending bit): from here until
    /// they are stored again their stored bits may miss a write, and say so to every reader.
    /// </summary>
    public static void MarkInUse(ImageContext ctx)
    {
        var set = ctx.Bitmaps;
        if (set is null || !set.Tracking || ctx.Headers.Block.Bitmaps is not { } ext) return;
        var entries = set.Entries.Select(e => e.Directory).ToList();
        bool changed = false;
        foreach (var e in set.Entries.Where(e => e.Tracked && (e.Directory.Flags & BitmapFlags.InUse) == 0))
        {
            e.Directory.Flags |= BitmapFlags.InUse;
            changed = true;
        }
        if (!changed) return;
        var bytes = new byte[ext.DirectorySize];
        BitmapDirectory.Write(entries, bytes);
        ctx.CheckTableWrite(ext.DirectoryOffset, bytes.Length, MetadataKind.BitmapDirectory);
        ctx.Device.Write(bytes, ext.DirectoryOffset);
    }

    /// <summary>
    /// Writes every bitmap whose bits changed (the tracked ones, and those edited) to new clusters and
    /// a new directory, every one without in-use: the checkpoint holds the bitmap journal from before
    /// this snapshot of the bits until the journal is emptied, so no write can reach a granule the
    /// snapshot lacks meanwhile (<see cref="BitmapSet.StoreDone"/> then makes the snapshot durable). It makes the header's bitmaps extension point at it in memory: the checkpoint's clean
    /// header write that follows carries it. Returns the clusters the old tables, data and directory
    /// used (and those of removed bitmaps), which the caller releases in the same checkpoint.
    /// </summary>
    public static async Task<long[]> StoreAsync(ImageContext ctx, BlockingIo io, bool closing)
    {
        var set = ctx.Bitmaps;
        if (set is null || !(set.NeedsStore || (closing && set.Tracking))) return [];
        var oldExt = ctx.Headers.Block.Bitmaps;
        int cs = (int)ctx.ClusterSize;
        int clusterBits = ctx.Geometry.ClusterBits;
        var release = new List<long>();
        var replaced = new List<BitmapDirectoryEntry>();
        var writes = new List<(long Offset, byte[] Bytes)>();
        var entries = new List<BitmapSet.Entry>(set.Entries.Count);
        foreach (var entry in set.Entries)
        {
            if (!entry.Tracked && !entry.NeedsStore)
            {
                entries.Add(entry);
                continue;
            }
            bool stillTracked = entry.Tracked && !closing;
            var bits = entry.Bits!;
            int tableSize = bits.TableSize(cs);
            // Snapshot of the bits now: bits writers set later stay in memory for the next store.
            var clusters = new List<(int Index, byte[] Data)>();
            var stored = new DirtyBitmap(bits.GranularityBits, bits.VirtualSize);
            for (int i = 0; i < tableSize; i++)
            {
                var data = new byte[cs];
                if (!bits.StoreCluster(i, data)) continue;
                clusters.Add((i, data));
                stored.LoadCluster(i, data);
            }
            long dataOffset = clusters.Count > 0 ? await AllocateAsync(ctx, clusters.Count) : 0;
            int tableClusters = (int)(((long)tableSize * BitmapTableEntry.Size + cs - 1) / cs);
            long tableOffset = await AllocateAsync(ctx, tableClusters);
            var table = new byte[(long)tableClusters * cs];
            for (int k = 0; k < clusters.Count; k++)
            {
                long at = dataOffset + (long)k * cs;
                BitmapTableEntry.Data(at).Write(table, clusters[k].Index);
                writes.Add((at, clusters[k].Data));
            }
            writes.Add((tableOffset, table));
            var old = entry.Directory;
            if (old.TableOffset != 0) replaced.Add(old);
            var directory = new BitmapDirectoryEntry
            {
                TableOffset = tableOffset,
                TableSize = tableSize,
                Flags = old.Flags & ~BitmapFlags.InUse,
                Type = old.Type,
                GranularityBits = old.GranularityBits,
                Name = old.Name,
                ExtraData = old.ExtraData,
            };
            // Until the header points at the new directory, what was durable stays what is durable.
            entries.Add(new BitmapSet.Entry(directory, bits, inconsistent: false, tracked: stillTracked, stillTracked ? entry.Durable : null)
            {
                Stored = stillTracked ? stored : null,
            });
        }
        var removed = set.Removed.ToList();
        replaced.AddRange(removed);

        BitmapsExtension? newExt = null;
        if (entries.Count > 0)
        {
            var dirBytes = new byte[BitmapDirectory.ComputeSize(entries.Select(e => e.Directory))];
            BitmapDirectory.Write([.. entries.Select(e => e.Directory)], dirBytes);
            int dirClusters = (dirBytes.Length + cs - 1) / cs;
            long dirOffset = await AllocateAsync(ctx, dirClusters);
            var dirCluster = new byte[(long)dirClusters * cs];
            dirBytes.CopyTo(dirCluster, 0);
            writes.Add((dirOffset, dirCluster));
            newExt = new BitmapsExtension(entries.Count, dirBytes.Length, dirOffset);
        }
        if (oldExt is not null)
        {
            long oldDirStart = oldExt.DirectoryOffset >> clusterBits;
            long oldDirEnd = (oldExt.DirectoryOffset + oldExt.DirectorySize + cs - 1) >> clusterBits;
            for (long c = oldDirStart; c < oldDirEnd; c++) release.Add(c);
        }

        await io.Run(() =>
        {
            foreach (var old in replaced) release.AddRange(OldClusters(ctx, old));
            foreach (var (offset, bytes) in writes)
            {
                ctx.CheckDataWrite(offset, bytes.Length);
                ctx.Device.Write(bytes, offset);
            }
            ctx.Device.Flush();
        });
        // The overlap map follows the tables and the directory to their new places.
        if (oldExt is not null) ctx.Metadata.Remove(oldExt.DirectoryOffset, oldExt.DirectorySize, MetadataKind.BitmapDirectory);
        if (newExt is not null) ctx.Metadata.Add(newExt.DirectoryOffset, newExt.DirectorySize, MetadataKind.BitmapDirectory);
        foreach (var old in set.Entries.Where(e => e.Directory.TableOffset != 0 && !entries.Contains(e)).Select(e => e.Directory).Concat(removed))
            ctx.Metadata.Remove(old.TableOffset, (long)old.TableSize * BitmapTableEntry.Size, MetadataKind.BitmapTable);
        foreach (var stored in entries.Where(e => !set.Entries.Contains(e)))
            ctx.Metadata.Add(stored.Directory.TableOffset, (long)stored.Directory.TableSize * BitmapTableEntry.Size, MetadataKind.BitmapTable);
        ctx.Headers.ChangeBitmaps(newExt);
        set.Removed.Clear();
        set.Publish(entries);
        return [.. release];
    }

    // The clusters of a stored bitmap: its table's and its data clusters (read from its table on disk).
    private static List<long> OldClusters(ImageContext ctx, BitmapDirectoryEntry e)
    {
        int cs = (int)ctx.ClusterSize;
        int bits = ctx.Geometry.ClusterBits;
        var result = new List<long>();
        long tableBytes = (long)e.TableSize * BitmapTableEntry.Size;
        var table = new byte[tableBytes];
        if (ctx.Device.Read(table, e.TableOffset) < table.Length)
            throw new Qcow2ImageCorruptException($"'{ctx.Path}': bitmap '{e.Name}' table at 0x{e.TableOffset:X} lies past the end of the image");
        for (int i = 0; i < e.TableSize; i++)
        {
            var t = BitmapTableEntry.Read(table, i);
            if (t.DataOffset != 0) result.Add(t.DataOffset >> bits);
        }
        for (long c = e.TableOffset >> bits; c < (e.TableOffset + tableBytes + cs - 1) >> bits; c++) result.Add(c);
        return result;
    }

    private static async Task<long> AllocateAsync(ImageContext ctx, int clusters)
    {
        var reply = new TaskCompletionSource<Allocation>(TaskCreationOptions.RunContinuationsAsynchronously);
        ctx.Refcounts.Tell(new AllocateClusters(clusters, reply));
        return (await reply.Task.ConfigureAwait(false)).Offset;
    }
}
