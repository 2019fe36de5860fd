using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Metadata;
using Qcow2Actors.Engine.Write;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Bitmaps;

/// <summary>
/// Recovery's part for persistent bitmaps: a bitmap a crash left in use is made consistent again
/// when the replayed journal proves it tracked it (<see cref="BitmapTracked"/> naming the bitmap
/// and the table it has on disk): the journaled ranges (<see cref="BitmapRangesSet"/>) are ORed into
/// its stored bits, which go to new clusters, and a new directory without in-use follows. Any other
/// in-use bitmap (one QEMU or an older q2a left, a journal without the proof) stays in use:
/// consistency is claimed only where the journal shows it. The old clusters become leaks the
/// refcount repair that follows every unclean recovery removes.
/// </summary>
internal static class BitmapRecovery
{
    /// <summary>
    /// Recovers the bitmaps <paramref name="batches"/> prove tracked; the new directory goes into
    /// <paramref name="block"/> (the caller's header write switches to it, after this flushed).
    /// Returns the names of the bitmaps made consistent.
    /// </summary>
    /// <exception cref="Qcow2ImageCorruptException">A tracked bitmap's table or data cannot be read.</exception>
    public static IReadOnlyList<string> Recover(IBlockDevice device, ImageHeaderBlock block, IReadOnlyList<JournalBatch> batches)
    {
        if (block.Bitmaps is not { } ext) return [];
        var tracked = new HashSet<(string Name, long TableOffset)>();
        var ranges = new List<(long Offset, long Length)>();
        foreach (var batch in batches)
        {
            foreach (var record in batch.Records)
            {
                if (record is BitmapTracked t) tracked.Add((t.Name, t.TableOffset));
                else if (record is BitmapRangesSet r) ranges.AddRange(r.Ranges);
            }
        }
        if (tracked.Count == 0) return [];
        var h = block.Header;
        var dirBytes = new byte[ext.DirectorySize];
        if (device.Read(dirBytes, ext.DirectoryOffset) < dirBytes.Length) return [];
        var directory = BitmapDirectory.Read(dirBytes, ext.NbBitmaps, ext.DirectoryOffset);
        int cs = h.ClusterSize;
        var refcounts = new RefcountState(device, h);
        var unjournaled = new List<MetadataRecord>(); // recovery writes refcounts in place, not to a journal
        var recovered = new List<string>();
        foreach (var e in directory)
        {
            if ((e.Flags & BitmapFlags.InUse) == 0 || !tracked.Contains((e.Name, e.TableOffset))) continue;
            if (BitmapReader.Problem(e, h.Size, h.ClusterBits) is not null) continue;
            var bits = BitmapReader.ReadBits(device, e, h.Size, cs);
            foreach (var (offset, length) in ranges)
                if (offset < h.Size) bits.Mark(offset, Math.Min(length, h.Size - offset));
            e.TableOffset = WriteBits(device, refcounts, bits, cs, unjournaled);
            e.Flags &= ~BitmapFlags.InUse;
            recovered.Add(e.Name);
        }
        if (recovered.Count == 0) return [];
        var newDir = new byte[BitmapDirectory.ComputeSize(directory)];
        BitmapDirectory.Write(directory, newDir);
        int dirClusters = (newDir.Length + cs - 1) / cs;
        long dirOffset = refcounts.Allocate(dirClusters, unjournaled, out _);
        var dirCluster = new byte[(long)dirClusters * cs];
        newDir.CopyTo(dirCluster, 0);
        device.Write(dirCluster, dirOffset);
        refcounts.WriteBack();
        h.RefcountTableOffset = refcounts.TableOffset;
        h.RefcountTableClusters = refcounts.TableClusters;
        // Durable before the header points at it.
        device.Flush();
        block.Bitmaps = new BitmapsExtension(directory.Count, newDir.Length, dirOffset);
        return recovered;
    }

    // The bits to new data clusters and a new table; returns the table's offset.
    private static long WriteBits(IBlockDevice device, RefcountState refcounts, DirtyBitmap bits, int cs, List<MetadataRecord> unjournaled)
    {
        int tableSize = bits.TableSize(cs);
        int tableClusters = (int)(((long)tableSize * BitmapTableEntry.Size + cs - 1) / cs);
        var table = new byte[(long)tableClusters * cs];
        var data = new byte[cs];
        for (int i = 0; i < tableSize; i++)
        {
            if (!bits.StoreCluster(i, data)) continue;
            long at = refcounts.Allocate(1, unjournaled, out _);
            device.Write(data, at);
            BitmapTableEntry.Data(at).Write(table, i);
        }
        long tableOffset = refcounts.Allocate(tableClusters, unjournaled, out _);
        device.Write(table, tableOffset);
        return tableOffset;
    }
}
