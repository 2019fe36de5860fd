using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Write;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Amend;

/// <summary>
/// Rewrites an image's refcount structures at another width. The new table and blocks are built
/// beside the old ones, past the end of the file, counting every cluster as before except the old
/// refcount structures (0: they are free once the switch is made) and the new ones (1). Written and
/// flushed first, then one header write switches table offset, table size and width together. No
/// crash state needs repair: before the switch the new clusters are unreferenced with refcount 0 in
/// the old structures; after it the old clusters are unreferenced with refcount 0 in the new ones.
/// Streaming: the old counts stay on disk and are read one old block at a time as each new block is
/// built and written, so memory is the two tables (each within QEMU's 8 MiB table limit) and two
/// blocks, whatever the size of the file; new blocks that would hold only zeros are left as holes.
/// </summary>
internal static class RefcountRebuild
{
    /// <summary>
    /// The old refcount structures: the offset of each table entry's block (0: none), their width,
    /// one past the last cluster with a refcount, and the clusters the structures occupy.
    /// </summary>
    internal sealed record OldRefcounts(long[] BlockOffsets, int ClusterBits, int RefcountOrder, long End, HashSet<long> MetadataClusters);

    /// <summary>Where the new structures go: the table's first cluster, its length and the blocks' count (the blocks follow the table).</summary>
    internal readonly record struct Layout(long Start, long TableClusters, long Blocks)
    {
        /// <summary>One past the last cluster of the new structures.</summary>
        public long End => Start + TableClusters + Blocks;
    }

    /// <summary>Reads <paramref name="h"/>'s refcount table and scans its blocks for the last cluster in use.</summary>
    public static OldRefcounts Read(IBlockDevice device, Qcow2Header h)
    {
        int cb = h.ClusterBits;
        long cs = 1L << cb;
        var table = new byte[(long)h.RefcountTableClusters << cb];
        if (device.Read(table, h.RefcountTableOffset) < table.Length)
            throw new Qcow2ImageCorruptException($"refcount table at 0x{h.RefcountTableOffset:X} lies past the end of {device.Name}");
        var meta = new HashSet<long>();
        for (long c = 0; c < h.RefcountTableClusters; c++) meta.Add((h.RefcountTableOffset >> cb) + c);
        long perBlock = RefcountBlock.EntriesPerBlock(cb, h.RefcountOrder);
        var offsets = new long[table.Length / 8];
        var block = new byte[cs];
        long end = 0;
        for (long i = 0; i < offsets.Length; i++)
        {
            var e = RefcountTableEntry.Read(table, i);
            if (e.Validate(cb) is { } problem) throw new Qcow2ImageCorruptException($"refcount table entry {i}: {problem}");
            long offset = (long)(e.Raw & RefcountTableEntry.OffsetMask);
            offsets[i] = offset;
            if (offset == 0) continue;
            meta.Add(offset >> cb);
            if (device.Read(block, offset) < block.Length)
                throw new Qcow2ImageCorruptException($"refcount block {i} at 0x{offset:X} lies past the end of {device.Name}");
            for (long j = perBlock - 1; j >= 0; j--)
            {
                if (RefcountBlock.Get(block, j, h.RefcountOrder) == 0) continue;
                end = Math.Max(end, i * perBlock + j + 1);
                break;
            }
        }
        return new OldRefcounts(offsets, cb, h.RefcountOrder, end, meta);
    }

    /// <summary>
    /// The non-zero old refcounts of clusters in [<paramref name="from"/>, <paramref name="to"/>), in
    /// cluster order, read one old block at a time into <paramref name="block"/> (one cluster long;
    /// absent blocks skipped whole).
    /// </summary>
    internal static IEnumerable<(long Cluster, ulong Count)> NonZero(IBlockDevice device, OldRefcounts old, long from, long to, byte[] block)
    {
        long perBlock = RefcountBlock.EntriesPerBlock(old.ClusterBits, old.RefcountOrder);
        to = Math.Min(to, old.End);
        for (long c = from; c < to;)
        {
            long index = c / perBlock, blockEnd = Math.Min((index + 1) * perBlock, to);
            long offset = index < old.BlockOffsets.Length ? old.BlockOffsets[index] : 0;
            if (offset != 0)
            {
                if (device.Read(block, offset) < block.Length)
                    throw new Qcow2ImageCorruptException($"refcount block {index} at 0x{offset:X} lies past the end of {device.Name}");
                for (long x = c; x < blockEnd; x++)
                {
                    ulong v = RefcountBlock.Get(block, x - index * perBlock, old.RefcountOrder);
                    if (v != 0) yield return (x, v);
                }
            }
            c = blockEnd;
        }
    }

    /// <summary>The first cluster whose count does not fit <paramref name="refcountOrder"/>, or null.</summary>
    public static (long Cluster, ulong Count)? FirstOverflow(IBlockDevice device, OldRefcounts old, int refcountOrder)
    {
        ulong max = RefcountBlock.MaxValue(refcountOrder);
        foreach (var (c, v) in NonZero(device, old, 0, old.End, new byte[1L << old.ClusterBits]))
            if (v > max && !old.MetadataClusters.Contains(c)) return (c, v);
        return null;
    }

    /// <summary>
    /// The new structures' place and size: from cluster <paramref name="start"/> on, enough blocks of
    /// width 2^<paramref name="refcountOrder"/> to cover every cluster up to their own end, and a table
    /// for them. Refused (one line) when the table would pass QEMU's limit.
    /// </summary>
    /// <exception cref="ImageAmendException">The table would exceed <see cref="Qcow2Header.MaxRefcountTableBytes"/>.</exception>
    internal static Layout Plan(long start, int clusterBits, int refcountOrder)
    {
        long cs = 1L << clusterBits;
        long perBlock = RefcountBlock.EntriesPerBlock(clusterBits, refcountOrder);
        long blocks = 0, tableClusters = 0;
        while (true)
        {
            long covered = start + tableClusters + blocks;
            long needBlocks = (covered + perBlock - 1) / perBlock;
            long needTable = (needBlocks * 8 + cs - 1) / cs;
            if (needBlocks == blocks && needTable == tableClusters) break;
            blocks = needBlocks;
            tableClusters = needTable;
            // Checked as it grows, so the arithmetic stays far from overflow on any file length.
            if (tableClusters * cs > Qcow2Header.MaxRefcountTableBytes)
                throw new ImageAmendException($"the refcount table would need {tableClusters * cs} bytes, above QEMU's limit of {Qcow2Header.MaxRefcountTableBytes}");
        }
        return new Layout(start, tableClusters, blocks);
    }

    /// <summary>Builds, writes and switches to refcount structures of width 2^<paramref name="refcountOrder"/>.</summary>
    public static void Run(IBlockDevice device, Qcow2Header h, OldRefcounts old, int refcountOrder, Action<double>? progress)
    {
        int cb = h.ClusterBits;
        long cs = 1L << cb;
        long perBlock = RefcountBlock.EntriesPerBlock(cb, refcountOrder);
        // Past every cluster in use and past the end of the file: clusters nothing refers to.
        var layout = Plan(Math.Max(old.End, (device.Length + cs - 1) >> cb), cb, refcountOrder);
        long tableOffset = layout.Start << cb;
        long blocksOffset = (layout.Start + layout.TableClusters) << cb;
        var table = new byte[layout.TableClusters * cs];
        var block = new byte[cs];
        var oldBlock = new byte[1L << old.ClusterBits];
        bool dirty = false;
        // 1. The new blocks, one at a time, then the table: durable before anything points at them.
        for (long i = 0; i < layout.Blocks; i++)
        {
            RefcountTableEntry.Create(blocksOffset + i * cs).Write(table, i);
            long from = i * perBlock, to = from + perBlock;
            if (dirty) Array.Clear(block);
            bool any = false;
            if (from < old.End)
            {
                foreach (var (c, v) in NonZero(device, old, from, to, oldBlock))
                {
                    if (old.MetadataClusters.Contains(c)) continue;
                    RefcountBlock.Set(block, c - from, refcountOrder, v);
                    any = true;
                }
            }
            for (long c = Math.Max(from, layout.Start); c < Math.Min(to, layout.End); c++)
            {
                RefcountBlock.Set(block, c - from, refcountOrder, 1);
                any = true;
            }
            // A block of zeros past the end of the file is a hole already: it reads as zeros unwritten.
            if (any) device.Write(block, blocksOffset + i * cs);
            dirty = any;
            if (progress is not null && (i & 1023) == 0) progress(50.0 * i / layout.Blocks);
        }
        device.Write(table, tableOffset);
        device.Flush();
        progress?.Invoke(50);
        // 2. One header write: offset, size and width together (bytes 48-99, one sector).
        var next = h.Clone();
        next.RefcountTableOffset = tableOffset;
        next.RefcountTableClusters = checked((int)layout.TableClusters);
        next.RefcountOrder = refcountOrder;
        HeaderWriter.WriteChangedFields(device, h, next);
        device.Flush();
        progress?.Invoke(100);
    }
}
