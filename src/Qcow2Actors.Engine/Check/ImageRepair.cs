using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Info;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Check;

/// <summary>What <see cref="ImageRepair.Repair"/> may change, as <c>qemu-img check -r</c>.</summary>
public enum RepairMode
{
    /// <summary><c>-r leaks</c>: lower refcounts that exceed their references; fix COPIED flags only when nothing else is wrong.</summary>
    Leaks,

    /// <summary><c>-r all</c>: also raise refcounts that are too low, fix COPIED flags, and rebuild a broken refcount structure.</summary>
    All,
}

/// <summary>Outcome of a repair: the image before and after, and what was fixed on the way.</summary>
public sealed class RepairResult
{
    /// <summary>The plain check of the image before anything was written.</summary>
    public required CheckResult Before { get; init; }

    /// <summary>
    /// The plain check after the repair (qemu-img's "Double checking the fixed image now...");
    /// equal to <see cref="Before"/> when the repair refused to start.
    /// </summary>
    public required CheckResult After { get; init; }

    /// <summary>Corruptions fixed (qemu-img's <c>corruptions-fixed</c>).</summary>
    public long CorruptionsFixed { get; init; }

    /// <summary>Leaked clusters fixed (qemu-img's <c>leaks-fixed</c>).</summary>
    public long LeaksFixed { get; init; }

    /// <summary>What the repair pass said, line by line, worded as qemu-img prints it on stderr.</summary>
    public required IReadOnlyList<string> Messages { get; init; }

    /// <summary>
    /// Set when the repair could not run (qemu-img's "Check failed: &lt;reason&gt;"), e.g. <c>-r leaks</c>
    /// on an image whose refcount structure needs a rebuild. Nothing was written then.
    /// </summary>
    public string? FailureReason { get; init; }

    /// <summary>A new refcount table and blocks were written and the header now points at them.</summary>
    public bool RefcountsRebuilt { get; init; }

    /// <summary>The dirty (and corrupt) incompatible bits were set and have been cleared.</summary>
    public bool MarkedClean { get; init; }

    /// <summary>True when something was written to fix the image (qemu-img then double-checks).</summary>
    public bool AnythingFixed => CorruptionsFixed != 0 || LeaksFixed != 0;

    /// <summary>qemu-img's exit code: 1 when the repair or the check failed, else <see cref="After"/>'s (0 when clean after repair).</summary>
    public int ExitCode => FailureReason is not null ? 1 : After.ExitCode;
}

/// <summary>
/// Offline repair of a qcow2 image's refcounts and COPIED flags, following <c>qemu-img check -r</c>
/// (FORMAT.md §5, §12): the same decisions and counts, with writes ordered so that a crash at any
/// point leaves the image no worse than before. Raises are written and flushed before any
/// decrease; a rebuilt refcount structure is written and flushed before the header points at it,
/// and the old one is freed only after the switch; the dirty bit is cleared last, and only
/// when the refcounts are exact.
/// </summary>
public static class ImageRepair
{
    private const IncompatibleFeatures DirtyAndCorrupt = IncompatibleFeatures.Dirty | IncompatibleFeatures.Corrupt;

    /// <summary>Repairs <paramref name="device"/> (opened writable) as <c>qemu-img check -r leaks|all</c> would.</summary>
    /// <param name="device">The image, opened read-write; nothing else may use it meanwhile.</param>
    /// <param name="filename">Name reported in the results.</param>
    /// <param name="mode">What may be changed.</param>
    /// <exception cref="Qcow2FormatException">The header is not one a qcow2 opener may accept; nothing was written.</exception>
    /// <exception cref="InvalidOperationException">The device is read-only.</exception>
    public static RepairResult Repair(IBlockDevice device, string filename, RepairMode mode) => Run(device, filename, mode, forceRebuild: false);

    /// <summary>
    /// Makes the stored refcounts exact whatever they hold (the recovery QEMU runs when it opens an
    /// image left dirty by lazy refcounts), then clears the dirty bit. Any refcount mismatch leads to
    /// a rebuild of the whole refcount structure from the references, rather than in-place fixes that
    /// would trust blocks whose contents are arbitrary. An image already exact is only marked clean.
    /// </summary>
    /// <param name="device">The image, opened read-write.</param>
    /// <param name="filename">Name reported in the results.</param>
    /// <exception cref="Qcow2FormatException">The header is not one a qcow2 opener may accept; nothing was written.</exception>
    /// <exception cref="InvalidOperationException">The device is read-only.</exception>
    public static RepairResult RebuildRefcounts(IBlockDevice device, string filename) => Run(device, filename, RepairMode.All, forceRebuild: true);

    private static RepairResult Run(IBlockDevice image, string filename, RepairMode mode, bool forceRebuild)
    {
        if (image.IsReadOnly) throw new InvalidOperationException($"{image.Name}: repair needs the image opened for writing");
        // Knowing that nothing was written lets Finish reuse the first check instead of repeating it.
        using var device = new WriteTrackingDevice(image);
        var before = ImageChecker.Check(device, filename);
        var pass = ImageChecker.Check(device, filename, mode == RepairMode.All ? CheckPass.RepairAll : CheckPass.RepairLeaks);
        var messages = new List<string>(pass.Messages);
        if (pass.AbortReason is not null)
            return new RepairResult { Before = before, After = before, Messages = messages, FailureReason = pass.AbortReason };

        long corruptionsFixed = pass.CorruptionsFixed, leaksFixed = 0;
        long corruptions, leaks, checkErrors;
        var rebuild = pass.NeedsRebuild || (forceRebuild && pass.Mismatches.Count > 0);
        if (rebuild && mode == RepairMode.All)
        {
            messages.Add("Rebuilding refcount structure");
            WriteNewRefcountStructure(device, pass);
            // The old table and blocks are now leaked (still counted once in the new blocks): free them last.
            var recount = ImageChecker.Check(device, filename, CheckPass.RepairAll);
            if (recount.AbortReason is not null)
                return Finish(device, filename, before, messages, corruptionsFixed, leaksFixed, recount.AbortReason, rebuilt: true);
            messages.AddRange(recount.Messages.Take(recount.CompareMessageStart));
            var (_, _, freshLeaksLeft, stillCorrupt) = ApplyRefcountFixes(device, recount.Mismatches, RepairMode.Leaks, messages);
            if (stillCorrupt > 0) messages.Add("ERROR rebuilt refcount structure is still broken");
            // qemu counts as fixed whatever the rebuild made disappear, measured against the first pass.
            corruptions = recount.PreCompareCorruptions + stillCorrupt;
            leaks = freshLeaksLeft;
            checkErrors = recount.CheckErrors;
            corruptionsFixed += Math.Max(0, pass.Corruptions - corruptions);
            leaksFixed += Math.Max(0, pass.Leaks - leaks);
        }
        else if (rebuild)
        {
            messages.Add("ERROR need to rebuild refcount structures");
            return new RepairResult { Before = before, After = before, Messages = messages, FailureReason = "Input/output error" };
        }
        else
        {
            var (fixedCorruptions, fixedLeaks, leaksLeft, corruptionsLeft) = ApplyRefcountFixes(device, pass.Mismatches, mode, messages);
            corruptionsFixed += fixedCorruptions;
            leaksFixed += fixedLeaks;
            corruptions = pass.PreCompareCorruptions + corruptionsLeft;
            leaks = pass.PreCompareLeaks + leaksLeft;
            checkErrors = pass.CheckErrors;
        }

        // COPIED follows the refcounts as they are now; with -r leaks only when they are known to be right.
        var repairCopied = mode == RepairMode.All || (checkErrors == 0 && corruptions == 0 && leaks == 0);
        var copied = ImageChecker.FixCopiedFlags(device, filename, repairCopied);
        messages.AddRange(copied.Messages);
        corruptionsFixed += copied.CorruptionsFixed;
        if (copied.CorruptionsFixed > 0) device.Flush();
        return Finish(device, filename, before, messages, corruptionsFixed, leaksFixed, copied.AbortReason, rebuild);
    }

    private static RepairResult Finish(WriteTrackingDevice device, string filename, CheckResult before, List<string> messages,
        long corruptionsFixed, long leaksFixed, string? failure, bool rebuilt)
    {
        // Unchanged bytes check the same: the plain check before is the check after.
        var after = device.Changed ? ImageChecker.Check(device, filename) : before;
        var markedClean = false;
        if (failure is null && after.AbortReason is null && after.ExitCode == 0)
            markedClean = MarkClean(device);
        return new RepairResult
        {
            Before = before, After = after, Messages = messages, CorruptionsFixed = corruptionsFixed, LeaksFixed = leaksFixed,
            FailureReason = failure, RefcountsRebuilt = rebuilt, MarkedClean = markedClean,
        };
    }

    /// <summary>Clears the dirty and corrupt bits (v3 only), after everything they guard is durable.</summary>
    private static bool MarkClean(IBlockDevice device)
    {
        var header = ImageMetadata.Load(device, ValidationProfile.Check).Header;
        if (header.Version < 3 || (header.IncompatibleFeatures & DirtyAndCorrupt) == 0) return false;
        var clean = header.Clone();
        clean.IncompatibleFeatures &= ~DirtyAndCorrupt;
        Qcow2Actors.Engine.Write.HeaderWriter.WriteChangedFields(device, header, clean);
        device.Flush();
        return true;
    }

    /// <summary>
    /// qemu's compare_refcounts with fixes: leaks are lowered (when allowed), refcounts below
    /// the references raised (with <see cref="RepairMode.All"/>). Raises go to disk and are flushed
    /// before any decrease, so a crash in between leaves at worst a leak, never a cluster that
    /// looks free while still in use.
    /// </summary>
    private static (long CorruptionsFixed, long LeaksFixed, long LeaksLeft, long CorruptionsLeft) ApplyRefcountFixes(
        IBlockDevice device, IReadOnlyList<RefcountMismatch> mismatches, RepairMode mode, List<string> messages)
    {
        var raises = new List<RefcountMismatch>();
        var decreases = new List<RefcountMismatch>();
        foreach (var m in mismatches)
        {
            var fix = m.IsLeak || mode == RepairMode.All;
            // A stored 0 means no usable block may hold the entry; only a rebuild can fix that.
            if (m.Stored == 0) fix = false;
            messages.Add($"{(fix ? "Repairing" : m.IsLeak ? "Leaked" : "ERROR")} cluster {m.Cluster} refcount={m.Stored} reference={m.References}");
            if (fix) (m.IsLeak ? decreases : raises).Add(m);
        }
        var failedRaises = SetStoredRefcounts(device, raises);
        var failedDecreases = SetStoredRefcounts(device, decreases);
        long corruptionsLeft = mismatches.Count(m => !m.IsLeak) - raises.Count + failedRaises;
        long leaksLeft = mismatches.Count(m => m.IsLeak) - decreases.Count + failedDecreases;
        return (raises.Count - failedRaises, decreases.Count - failedDecreases, leaksLeft, corruptionsLeft);
    }

    /// <summary>
    /// Writes <see cref="RefcountMismatch.References"/> as the stored refcount of each cluster,
    /// one block write per refcount block, then flushes. Returns how many could not be written
    /// (their block is missing or unusable).
    /// </summary>
    private static int SetStoredRefcounts(IBlockDevice device, IReadOnlyList<RefcountMismatch> updates)
    {
        if (updates.Count == 0) return 0;
        var meta = ImageMetadata.Load(device, ValidationProfile.Check);
        var cs = meta.ClusterSize;
        var perBlockBits = meta.ClusterBits + 3 - meta.RefcountOrder;
        var table = StoredRefcounts.ReadTable(device, meta);
        var failed = 0;
        var block = new byte[cs];
        foreach (var group in updates.GroupBy(u => u.Cluster >> perBlockBits))
        {
            var index = group.Key;
            var entry = index < table.Length ? table[index] : default;
            if (entry.IsUnallocated || entry.ReservedBits != 0 || (entry.BlockOffset & (cs - 1)) != 0 || entry.BlockOffset >= device.Length)
            {
                failed += group.Count();
                continue;
            }
            ImageMetadata.ReadZeroFilled(device, block, entry.BlockOffset);
            foreach (var u in group)
                RefcountBlock.Set(block, u.Cluster & ((1L << perBlockBits) - 1), meta.RefcountOrder, u.References);
            device.Write(block, entry.BlockOffset);
        }
        device.Flush();
        return failed;
    }

    /// <summary>
    /// qemu's rebuild_refcount_structure, laid out for crash safety: new refcount blocks and then
    /// the new table go past every cluster anything references (and past the old structure, even
    /// the parts of it that are broken), so nothing reachable from the current header is
    /// overwritten. The new blocks describe the counted references plus themselves; they are
    /// flushed, and only then does one 12-byte header write (table offset and size, inside one
    /// sector) switch to them, flushed again.
    /// </summary>
    private static void WriteNewRefcountStructure(IBlockDevice device, CheckResult counted)
    {
        var meta = ImageMetadata.Load(device, ValidationProfile.Check);
        var refs = counted.References ?? throw new InvalidOperationException("the check stopped before counting references");
        var cs = meta.ClusterSize;
        var order = meta.RefcountOrder;
        var perBlock = RefcountBlock.EntriesPerBlock(meta.ClusterBits, order);

        long start = counted.OldStructureEnd;
        var blocksBelowStart = new SortedSet<long>();
        for (long c = 0; c < refs.Count; c++)
        {
            if (refs[c] == 0) continue;
            start = Math.Max(start, c + 1);
            blocksBelowStart.Add(c / perBlock);
        }

        // Fixed point: the new blocks and table need refcounts too, which may need another block,
        // which may grow the table. Both counts only grow, so this ends after a few rounds.
        long blocks = 0, tableClusters = 0;
        SortedSet<long> needed;
        while (true)
        {
            var end = start + blocks + tableClusters;
            needed = new SortedSet<long>(blocksBelowStart);
            for (var b = start / perBlock; b <= (end - 1) / perBlock && end > start; b++) needed.Add(b);
            var entries = needed.Count == 0 ? 1 : needed.Max + 1;
            var newTableClusters = Math.Max(1, (entries * 8 + cs - 1) / cs);
            if (needed.Count == blocks && newTableClusters == tableClusters) break;
            blocks = needed.Count;
            tableClusters = newTableClusters;
        }
        if (tableClusters * cs > Qcow2Header.MaxRefcountTableBytes)
            throw new Qcow2FormatException("refcount_table_clusters", Qcow2Header.RefcountTableClustersOffset, "rebuilt refcount table would be too large");

        var structureEnd = start + blocks + tableClusters;
        ulong CountOf(long cluster) => cluster < start ? refs[cluster] : cluster < structureEnd ? 1UL : 0UL;

        var table = new byte[tableClusters * cs];
        var buffer = new byte[cs];
        var next = start;
        foreach (var b in needed)
        {
            Array.Clear(buffer);
            var first = b * perBlock;
            for (long i = 0; i < perBlock; i++)
            {
                var value = CountOf(first + i);
                if (value != 0) RefcountBlock.Set(buffer, i, order, value);
            }
            var offset = next++ * cs;
            device.Write(buffer, offset);
            RefcountTableEntry.Create(offset).Write(table, b);
        }
        var tableOffset = next * cs;
        device.Write(table, tableOffset);
        device.Flush();

        device.Write(Qcow2Header.EncodeRefcountTablePointer(tableOffset, (int)tableClusters), Qcow2Header.RefcountTableOffsetOffset);
        device.Flush();
    }
}
