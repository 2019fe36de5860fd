using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Metadata;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Write;

/// <summary>
/// Recovery: applies journaled batches to the tables on disk, in order. Records are
/// absolute, so applying ones whose effect already reached the disk (a checkpoint that
/// crashed before it could truncate the journal) changes nothing; tables a record says
/// were created start from zeros, never from the old bytes of a reused cluster.
/// </summary>
internal static class RecordApplier
{
    /// <summary>Applies <paramref name="batches"/> and writes every touched table in place (no flush).</summary>
    public static int Apply(IBlockDevice device, ImageHeaderBlock block, IReadOnlyList<JournalBatch> batches)
    {
        var h = block.Header;
        long cs = h.ClusterSize;
        bool extended = h.HasExtendedL2;
        var refcounts = new RefcountState(device, h);
        var l1 = ReadL1(device, h);
        bool l1Dirty = false;
        var tables = new Dictionary<long, byte[]>();
        int applied = 0;
        foreach (var batch in batches)
        {
            foreach (var record in batch.Records)
            {
                applied++;
                switch (record)
                {
                    case SetL1Entry r:
                        if (r.Index >= l1.Length) throw new InvalidDataException($"journal sets L1 entry {r.Index} beyond the table ({l1.Length} entries)");
                        l1[r.Index] = r.Value;
                        l1Dirty = true;
                        break;
                    case SetL2Entry r:
                        if (!tables.TryGetValue(r.TableOffset, out var table))
                        {
                            table = new byte[cs];
                            device.Read(table, r.TableOffset);
                            tables[r.TableOffset] = table;
                        }
                        L2Table.WriteEntry(table, r.Index, extended, new L2Entry(r.Word0, r.Word1));
                        break;
                    case NewTable { Kind: TableKind.L2 } r:
                        tables[r.Offset] = new byte[cs];
                        break;
                    case NewTable { Kind: TableKind.L1 } r:
                        l1 = new ulong[r.Length / 8];
                        h.L1TableOffset = r.Offset;
                        l1Dirty = true;
                        break;
                    case NewTable r:
                        refcounts.ApplyNewTable(r);
                        break;
                    case SetRefcountTableEntry r:
                        refcounts.ApplyTableEntry(r);
                        break;
                    case SetRefcount r:
                        refcounts.ApplyRefcount(r);
                        break;
                    case SetHeaderField r:
                        ApplyHeader(h, r);
                        break;
                }
            }
        }
        foreach (var (offset, table) in tables)
        {
            MetadataEvents.Raise(MetadataEvent.CheckpointWriteBack, device.Name);
            device.Write(table, offset);
        }
        refcounts.WriteBack();
        h.RefcountTableOffset = refcounts.TableOffset;
        h.RefcountTableClusters = refcounts.TableClusters;
        if (l1Dirty) WriteL1(device, h, l1);
        return applied;
    }

    public static ulong[] ReadL1(IBlockDevice device, Qcow2Header h)
    {
        var bytes = new byte[(long)h.L1Size * 8];
        if (bytes.Length > 0 && device.Read(bytes, h.L1TableOffset) < bytes.Length)
            throw new Qcow2ImageCorruptException($"L1 table at 0x{h.L1TableOffset:X} lies past the end of {device.Name}");
        return L1Table.Decode(bytes);
    }

    public static void WriteL1(IBlockDevice device, Qcow2Header h, ReadOnlySpan<ulong> l1)
    {
        var bytes = new byte[l1.Length * 8];
        L1Table.Encode(l1, bytes);
        if (bytes.Length == 0) return;
        MetadataEvents.Raise(MetadataEvent.CheckpointWriteBack, device.Name);
        device.Write(bytes, h.L1TableOffset);
    }

    private static void ApplyHeader(Qcow2Header h, SetHeaderField r)
    {
        switch (r.Field)
        {
            case HeaderField.L1TableOffset: h.L1TableOffset = (long)r.Value; break;
            case HeaderField.L1Size: h.L1Size = (int)r.Value; break;
            case HeaderField.RefcountTableOffset: h.RefcountTableOffset = (long)r.Value; break;
            case HeaderField.RefcountTableClusters: h.RefcountTableClusters = (int)r.Value; break;
            case HeaderField.Size: h.Size = (long)r.Value; break;
        }
    }
}
