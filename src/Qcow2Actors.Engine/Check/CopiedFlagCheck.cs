using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Check;

/// <summary>
/// qemu's check_oflag_copied: the COPIED flag of every active L1 entry and of every allocated
/// cluster in the active L2 tables must say whether the stored refcount is exactly 1. The plain
/// check reports wrong flags; the repair runs this same code with <c>repair</c> set, rewriting
/// them after the refcounts have been fixed.
/// </summary>
internal static class CopiedFlagCheck
{
    public static void Run(CheckContext ctx, StoredRefcounts stored, bool repair)
    {
        var meta = ctx.Meta;
        var l1 = ctx.ReadL1(meta.L1TableOffset, meta.L1Size);
        var l2 = ctx.RentCluster();
        try
        {
            RunTables(ctx, stored, repair, l1, l2);
        }
        finally
        {
            CheckContext.ReturnCluster(l2);
        }
    }

    private static void RunTables(CheckContext ctx, StoredRefcounts stored, bool repair, L1Entry[] l1, byte[] l2)
    {
        var meta = ctx.Meta;
        var verb = repair ? "Repairing" : "ERROR";
        for (var i = 0; i < l1.Length; i++)
        {
            var entry = l1[i];
            var l2Offset = (ulong)entry.L2Offset;
            if (l2Offset == 0) continue;
            if (!stored.TryGet((long)(l2Offset >> ctx.ClusterBits), out var refcount)) continue;
            if (L2Entry.CopiedFor(refcount) != entry.IsCopied)
            {
                ctx.Corruption($"{verb} OFLAG_COPIED L2 cluster: l1_index={i} l1_entry={entry.Raw:x} refcount={refcount}");
                if (repair)
                {
                    var bytes = new byte[L1Entry.Size];
                    entry.WithCopied(L2Entry.CopiedFor(refcount)).Write(bytes, 0);
                    ctx.Device.Write(bytes, (long)meta.L1TableOffset + (long)L1Entry.Size * i);
                    ctx.Result.Corruptions--;
                    ctx.Result.CorruptionsFixed++;
                }
            }
            ctx.ReadL2(l2, l2Offset, "ERROR: Could not read L2 table: Input/output error");
            var dirty = 0;
            for (long j = ctx.NextNonZeroL2Entry(l2, 0); j < meta.L2Entries; j = ctx.NextNonZeroL2Entry(l2, j + 1))
            {
                var l2Entry = ctx.L2At(l2, j);
                if (ctx.Classify(l2Entry) is not (L2EntryKind.Normal or L2EntryKind.ZeroAllocated)) continue;
                ulong dataRefcount = 1;
                // Data in an external data file has no refcount: it is always exclusively owned.
                if (!meta.HasDataFile && !stored.TryGet(l2Entry.HostOffset >> ctx.ClusterBits, out dataRefcount)) continue;
                if (L2Entry.CopiedFor(dataRefcount) != l2Entry.IsCopied)
                {
                    ctx.Corruption($"{verb} OFLAG_COPIED data cluster: l2_entry={l2Entry.Word0:x} refcount={dataRefcount}");
                    if (repair)
                    {
                        L2Table.WriteEntry(l2, (int)j, meta.ExtendedL2, l2Entry.WithCopied(L2Entry.CopiedFor(dataRefcount)));
                        dirty++;
                    }
                }
            }
            if (dirty == 0) continue;
            if (!ctx.MayRewriteL2(l2Offset, stored.Table))
            {
                ctx.Error("ERROR: Could not write L2 table; metadata overlap check failed: Input/output error");
                ctx.Result.CheckErrors++;
                throw new AbortCheck("Input/output error");
            }
            ctx.Device.Write(l2, (long)l2Offset);
            ctx.Result.Corruptions -= dirty;
            ctx.Result.CorruptionsFixed += dirty;
        }
    }
}
