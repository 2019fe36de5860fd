using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Read;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Write;

/// <summary>
/// Fills a <see cref="MetadataMap"/> with every structure an image holds when a write open
/// starts (after recovery): header, active L1 and L2 tables, refcount table and blocks,
/// snapshot table, each snapshot's L1 table and the L2 tables it reaches, bitmap directory
/// and bitmap tables. From then on the actors that move or free a table keep the map right;
/// snapshots change only in an online snapshot edit, which clears the map and builds it again.
/// </summary>
internal static class MetadataMapBuilder
{
    /// <returns>The snapshot table as read on the way (sizes of entries too old to record one filled in with the disk's).</returns>
    public static async Task<List<SnapshotEntry>> RegisterAsync(MetadataMap map, IBlockDevice device, ImageHeaderBlock block, ImageView active, CancellationToken ct)
    {
        List<SnapshotEntry> snapshotList = [];
        var h = block.Header;
        long cs = h.ClusterSize;
        map.Add(0, cs, MetadataKind.Header);
        map.Add(h.L1TableOffset, (long)h.L1Size * L1Entry.Size, MetadataKind.L1Table);
        AddL2Tables(map, active.L1, cs, MetadataKind.L2Table);

        long refcountBytes = (long)h.RefcountTableClusters * cs;
        map.Add(h.RefcountTableOffset, refcountBytes, MetadataKind.RefcountTable);
        var refcountTable = await ReadAsync(device, h.RefcountTableOffset, refcountBytes, ct).ConfigureAwait(false);
        for (long i = 0; i < refcountTable.Length / RefcountTableEntry.Size; i++)
        {
            long blockOffset = RefcountTableEntry.Read(refcountTable, i).BlockOffset;
            if (blockOffset != 0) map.Add(blockOffset, cs, MetadataKind.RefcountBlock);
        }

        if (h.NbSnapshots > 0)
        {
            var (snapshots, tableBytes) = await ReadSnapshotTableAsync(device, h, ct).ConfigureAwait(false);
            snapshotList = snapshots;
            foreach (var s in snapshots) s.DiskSize ??= h.Size;
            map.Add(h.SnapshotsOffset, tableBytes, MetadataKind.SnapshotTable);
            foreach (var s in snapshots)
            {
                long l1Bytes = (long)s.L1Size * L1Entry.Size;
                map.Add(s.L1TableOffset, l1Bytes, MetadataKind.SnapshotL1);
                var l1 = await ReadAsync(device, s.L1TableOffset, l1Bytes, ct).ConfigureAwait(false);
                AddL2Tables(map, L1Table.Decode(l1), cs, MetadataKind.SnapshotL2);
            }
        }

        if (block.Bitmaps is { } bitmaps)
        {
            map.Add(bitmaps.DirectoryOffset, bitmaps.DirectorySize, MetadataKind.BitmapDirectory);
            var directory = await ReadAsync(device, bitmaps.DirectoryOffset, bitmaps.DirectorySize, ct).ConfigureAwait(false);
            List<BitmapDirectoryEntry> entries;
            try
            {
                entries = BitmapDirectory.Read(directory, bitmaps.NbBitmaps, bitmaps.DirectoryOffset);
            }
            catch (Qcow2FormatException)
            {
                // A directory we cannot decode names no tables we could protect; the directory itself still is.
                entries = [];
            }
            foreach (var e in entries)
                map.Add(e.TableOffset, (long)e.TableSize * BitmapTableEntry.Size, MetadataKind.BitmapTable);
        }
        return snapshotList;
    }

    private static void AddL2Tables(MetadataMap map, ReadOnlySpan<ulong> l1, long clusterSize, MetadataKind kind)
    {
        foreach (var raw in l1)
        {
            long l2 = new L1Entry(raw).L2Offset;
            if (l2 != 0) map.Add(l2, clusterSize, kind);
        }
    }

    /// <summary>The snapshot table and the bytes it occupies, read in growing steps (it is rarely more than a few KiB).</summary>
    private static async Task<(List<SnapshotEntry> Entries, long Bytes)> ReadSnapshotTableAsync(IBlockDevice device, Qcow2Header h, CancellationToken ct)
    {
        long cap = Math.Min(SnapshotTable.MaxTableSize, Math.Max(0, device.Length - h.SnapshotsOffset));
        long size = Math.Min(cap, 64 * 1024);
        while (true)
        {
            var bytes = await ReadAsync(device, h.SnapshotsOffset, size, ct).ConfigureAwait(false);
            try
            {
                var entries = SnapshotTable.Read(bytes, h.NbSnapshots, h.Version, h.SnapshotsOffset, out long stored);
                return (entries, stored);
            }
            catch (Qcow2FormatException) when (size < cap)
            {
                size = Math.Min(cap, size * 4);
            }
        }
    }

    /// <summary>Up to <paramref name="length"/> bytes at <paramref name="offset"/>: a table reaching past the file end yields what is there.</summary>
    private static async Task<byte[]> ReadAsync(IBlockDevice device, long offset, long length, CancellationToken ct)
    {
        long available = Math.Clamp(device.Length - offset, 0, length);
        if (offset <= 0 || available == 0) return [];
        var bytes = new byte[available];
        int n = await device.ReadAsync(bytes, offset, ct).ConfigureAwait(false);
        return n == bytes.Length ? bytes : bytes[..n];
    }
}
