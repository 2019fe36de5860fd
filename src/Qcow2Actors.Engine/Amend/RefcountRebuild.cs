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
/// </summary>
internal static class RefcountRebuild
{
    /// <summary>The old refcounts, as read: one value per cluster up to the last one in use.</summary>
    internal sealed record OldRefcounts(ulong[] Counts, HashSet<long> MetadataClusters);

    /// <summary>Reads every refcount of <paramref name="h"/>'s structures, and which clusters hold them.</summary>
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
        var counts = new List<(long Cluster, ulong Value)>();
        var block = new byte[cs];
        long entries = table.Length / 8;
        for (long i = 0; i < entries; i++)
        {
            var e = RefcountTableEntry.Read(table, i);
            if (e.Validate(cb) is { } problem) throw new Qcow2ImageCorruptException($"refcount table entry {i}: {problem}");
            long offset = (long)(e.Raw & RefcountTableEntry.OffsetMask);
            if (offset == 0) continue;
            meta.Add(offset >> cb);
            if (device.Read(block, offset) < block.Length)
                throw new Qcow2ImageCorruptException($"refcount block {i} at 0x{offset:X} lies past the end of {device.Name}");
            for (long j = 0; j < perBlock; j++)
            {
                ulong v = RefcountBlock.Get(block, j, h.RefcountOrder);
                if (v != 0) counts.Add((i * perBlock + j, v));
            }
        }
        var dense = new ulong[counts.Count == 0 ? 0 : counts[^1].Cluster + 1];
        foreach (var (c, v) in counts) dense[c] = v;
        return new OldRefcounts(dense, meta);
    }

    /// <summary>The first cluster whose count does not fit <paramref name="refcountOrder"/>, or null.</summary>
    public static (long Cluster, ulong Count)? FirstOverflow(OldRefcounts old, int refcountOrder)
    {
        ulong max = RefcountBlock.MaxValue(refcountOrder);
        for (long c = 0; c < old.Counts.Length; c++)
            if (old.Counts[c] > max && !old.MetadataClusters.Contains(c)) return (c, old.Counts[c]);
        return null;
    }

    /// <summary>Builds, writes and switches to refcount structures of width 2^<paramref name="refcountOrder"/>.</summary>
    public static void Run(IBlockDevice device, Qcow2Header h, OldRefcounts old, int refcountOrder, Action<double>? progress)
    {
        int cb = h.ClusterBits;
        long cs = 1L << cb;
        long perBlock = RefcountBlock.EntriesPerBlock(cb, refcountOrder);
        // Past every cluster in use and past the end of the file: clusters nothing refers to.
        long start = Math.Max(old.Counts.Length, (device.Length + cs - 1) >> cb);
        long blocks = 0, tableClusters = 0;
        while (true)
        {
            long covered = start + tableClusters + blocks;
            long needBlocks = (covered + perBlock - 1) / perBlock;
            long needTable = (needBlocks * 8 + cs - 1) / cs;
            if (needBlocks == blocks && needTable == tableClusters) break;
            blocks = needBlocks;
            tableClusters = needTable;
        }
        if (tableClusters * cs > Qcow2Header.MaxRefcountTableBytes)
            throw new ImageAmendException($"the refcount table would need {tableClusters * cs} bytes, above QEMU's limit of {Qcow2Header.MaxRefcountTableBytes}");

        long tableOffset = start << cb;
        long blocksOffset = (start + tableClusters) << cb;
        var table = new byte[tableClusters * cs];
        var blockBytes = new byte[blocks * cs];
        for (long i = 0; i < blocks; i++) RefcountTableEntry.Create(blocksOffset + i * cs).Write(table, i);
        void Set(long cluster, ulong value) =>
            RefcountBlock.Set(blockBytes.AsSpan((int)(cluster / perBlock * cs), (int)cs), cluster % perBlock, refcountOrder, value);
        for (long c = 0; c < old.Counts.Length; c++)
            if (old.Counts[c] != 0 && !old.MetadataClusters.Contains(c)) Set(c, old.Counts[c]);
        for (long c = start; c < start + tableClusters + blocks; c++) Set(c, 1);
        progress?.Invoke(50);

        // 1. The new structures, durable before anything points at them.
        device.Write(blockBytes, blocksOffset);
        device.Write(table, tableOffset);
        device.Flush();
        // 2. One header write: offset, size and width together (bytes 48-99, one sector).
        var next = h.Clone();
        next.RefcountTableOffset = tableOffset;
        next.RefcountTableClusters = (int)tableClusters;
        next.RefcountOrder = refcountOrder;
        HeaderWriter.WriteChangedFields(device, h, next);
        device.Flush();
        progress?.Invoke(100);
    }
}
