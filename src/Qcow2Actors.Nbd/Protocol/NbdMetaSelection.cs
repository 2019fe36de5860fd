using static Qcow2Actors.Nbd.Protocol.NbdProtocol;

namespace Qcow2Actors.Nbd.Protocol;

/// <summary>Which kind of metadata context a selected one is.</summary>
internal enum NbdMetaKind
{
    BaseAllocation,
    AllocationDepth,
    DirtyBitmap,
}

/// <summary>One metadata context an export offers: its wire name, the id SET_META_CONTEXT hands out, and what answers it.</summary>
/// <param name="Name">The context's name on the wire, e.g. <c>qemu:dirty-bitmap:b0</c>.</param>
/// <param name="Id">The id SET_META_CONTEXT hands out and BLOCK_STATUS chunks carry.</param>
/// <param name="Kind">What answers it.</param>
/// <param name="Bitmap">For <see cref="NbdMetaKind.DirtyBitmap"/>, the bitmap's name; else null.</param>
internal sealed record NbdMetaContext(string Name, uint Id, NbdMetaKind Kind, string? Bitmap);

/// <summary>
/// The contexts a LIST_META_CONTEXT or SET_META_CONTEXT query picks from what an export offers, as
/// qemu-nbd picks them: no query at all lists everything (LIST only); a namespace with an empty leaf
/// (<c>base:</c>, <c>qemu:</c>, <c>qemu:dirty-bitmap:</c>) lists everything under it (LIST only; SET
/// selects nothing for it); an exact name picks that context when the export offers it; anything else
/// is skipped. Replies go in one fixed order: base:allocation, qemu:allocation-depth, then the
/// bitmaps in export order, each at most once.
/// </summary>
internal static class NbdMetaSelection
{
    /// <summary>Every context <paramref name="export"/> offers, in reply order with their ids.</summary>
    public static List<NbdMetaContext> Offered(INbdExport export)
    {
        var offered = new List<NbdMetaContext> { new(BaseAllocation, BaseAllocationId, NbdMetaKind.BaseAllocation, null) };
        if (export.AllocationDepth) offered.Add(new(AllocationDepthContext, AllocationDepthId, NbdMetaKind.AllocationDepth, null));
        var bitmaps = export.DirtyBitmaps;
        for (int i = 0; i < bitmaps.Count; i++)
            offered.Add(new(DirtyBitmapPrefix + bitmaps[i], FirstDirtyBitmapId + (uint)i, NbdMetaKind.DirtyBitmap, bitmaps[i]));
        return offered;
    }

    /// <summary>The contexts <paramref name="queries"/> pick from <paramref name="export"/>'s, in reply order.</summary>
    public static List<NbdMetaContext> Select(INbdExport export, IReadOnlyList<string> queries, bool list)
    {
        var offered = Offered(export);
        if (list && queries.Count == 0) return offered;
        var picked = new bool[offered.Count];
        foreach (var query in queries)
        {
            for (int i = 0; i < offered.Count; i++)
                picked[i] |= Matches(offered[i], query, list);
        }
        var selected = new List<NbdMetaContext>();
        for (int i = 0; i < offered.Count; i++)
        {
            if (picked[i]) selected.Add(offered[i]);
        }
        return selected;
    }

    /// <summary>True when <paramref name="query"/> names <paramref name="context"/>, or (LIST only) a namespace holding it.</summary>
    private static bool Matches(NbdMetaContext context, string query, bool list)
    {
        if (string.Equals(query, context.Name, StringComparison.Ordinal)) return true;
        if (!list) return false;
        return context.Kind switch
        {
            NbdMetaKind.BaseAllocation => query == BaseNamespace,
            NbdMetaKind.AllocationDepth => query == QemuNamespace,
            _ => query is QemuNamespace or DirtyBitmapPrefix,
        };
    }
}
