using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Snapshots;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Amend;

/// <summary>
/// Version 2 has no zero clusters: before a downgrade every zero entry of the active L2 tables
/// becomes what v2 can say. A plain zero entry becomes unallocated when nothing lies beneath
/// (no backing file), else a new cluster of zeros; a preallocated one keeps its cluster, now made to
/// read as zeros. The zeros and the new clusters' refcounts are durable before any L2 entry
/// changes, and every intermediate state reads the same (a zero cluster reads as zeros either way).
/// </summary>
internal static class ZeroClusterExpansion
{
    /// <summary>True when any L2 table of <paramref name="l1"/> holds a zero entry.</summary>
    public static bool HasZeroClusters(IBlockDevice device, Qcow2Header h, ulong[] l1)
    {
        foreach (var (_, table) in Tables(device, h, l1))
            for (int j = 0; j < h.L2Entries; j++)
                if (L2Table.ReadEntry(table, j, false).GetKind(h.Version, false) is L2EntryKind.ZeroPlain or L2EntryKind.ZeroAllocated) return true;
        return false;
    }

    /// <summary>Rewrites the active tree's zero entries (the image has no snapshots and standard L2 entries).</summary>
    public static void Run(IBlockDevice device, SnapshotSession s)
    {
        var h = s.Header;
        long cs = h.ClusterSize;
        var l1 = s.ReadL1(h.L1TableOffset, h.L1Size, "active L1 table");
        var changed = new List<(long Offset, byte[] Table)>();
        foreach (var (offset, table) in Tables(device, h, l1))
        {
            bool dirty = false;
            for (int j = 0; j < h.L2Entries; j++)
            {
                var e = L2Table.ReadEntry(table, j, false);
                var kind = e.GetKind(h.Version, false);
                if (kind == L2EntryKind.ZeroAllocated)
                {
                    WriteZeros(device, e.HostOffset, cs);
                    L2Table.WriteEntry(table, j, false, L2Entry.Standard(e.HostOffset, e.IsCopied));
                    dirty = true;
                }
                else if (kind == L2EntryKind.ZeroPlain)
                {
                    var next = default(L2Entry);
                    if (h.HasBackingFile)
                    {
                        // The backing file would show through an unallocated entry: allocate zeros instead.
                        long host = s.AllocateBytes(cs);
                        WriteZeros(device, host, cs);
                        next = L2Entry.Standard(host, copied: true);
                    }
                    L2Table.WriteEntry(table, j, false, next);
                    dirty = true;
                }
            }
            if (dirty) changed.Add((offset, table));
        }
        if (changed.Count == 0) return;
        // 1. Zeros and the new clusters' refcounts (a refcount table that had to grow is switched to
        // first, so no L2 entry points at a cluster only the new table counts); 2. the L2 entries.
        s.KeepOldRefcountTable();
        s.Refcounts.WriteBack();
        device.Flush();
        if (s.Refcounts.TableOffset != h.RefcountTableOffset)
        {
            s.WriteHeader(h.Clone());
            device.Flush();
            s.ReleaseOldRefcountTable();
            s.Refcounts.WriteBack();
            device.Flush();
        }
        foreach (var (offset, table) in changed) device.Write(table, offset);
        device.Flush();
    }

    // As QEMU expands them: the host range is given back (a hole reads as zeros, and qemu-img map then
    // reports the cluster as zero data), or the file grows sparsely over a fresh cluster.
    private static void WriteZeros(IBlockDevice device, long offset, long length)
    {
        if (offset + length > device.Length) device.SetLength(offset + length);
        device.PunchHole(offset, length);
    }

    private static IEnumerable<(long Offset, byte[] Table)> Tables(IBlockDevice device, Qcow2Header h, ulong[] l1)
    {
        var seen = new HashSet<long>();
        for (int i = 0; i < l1.Length; i++)
        {
            long offset = (long)(l1[i] & L1Entry.OffsetMask);
            if (offset == 0 || !seen.Add(offset)) continue;
            var table = new byte[h.ClusterSize];
            if (device.Read(table, offset) < table.Length)
                throw new Qcow2ImageCorruptException($"L1 entry {i} points to an L2 table at 0x{offset:X}, past the end of {device.Name}");
            yield return (offset, table);
        }
    }
}
