using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Info;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Check;

/// <summary>
/// Read-only consistency check of a qcow2 image (FORMAT.md §12), counting the way
/// <c>qemu-img check</c> counts so both report the same corruptions, leaks and exit code
/// on the same image. It counts every reference per host cluster (<see cref="ReferenceWalk"/>),
/// compares with the stored refcounts at the image's width (<see cref="StoredRefcounts"/>),
/// then checks the COPIED flags (<see cref="CopiedFlagCheck"/>, shared with the repair).
/// All decoding is Format's, under <see cref="ValidationProfile.Check"/>.
/// </summary>
public static class ImageChecker
{
    /// <summary>
    /// Opens <paramref name="path"/> read-only and checks it; a journal-pending image in the state
    /// <c>q2a recover</c> will leave (see <see cref="PendingJournal"/>), without writing anything.
    /// </summary>
    /// <exception cref="Qcow2FormatException">The header is not one a qcow2 opener may accept.</exception>
    /// <exception cref="ImageLockException">Without <paramref name="forceShare"/>: another process is writing the image.</exception>
    /// <exception cref="IOException">The image is journal-pending and its journal is missing.</exception>
    public static CheckResult CheckFile(string path, bool forceShare = false)
    {
        using var imageLock = ImageLock.Acquire(path, forceShare ? LockMode.ForceShareReader : LockMode.Reader);
        // A journal-pending image is checked as recovery will leave it (replayed in memory).
        using var device = PendingJournal.OpenRecovered(path);
        return Check(device, path);
    }

    /// <summary>
    /// Checks the image on <paramref name="device"/>. Problems inside the image are counted in
    /// the result; only a header no opener may accept throws.
    /// </summary>
    /// <exception cref="Qcow2FormatException">The header is not one a qcow2 opener may accept.</exception>
    public static CheckResult Check(IBlockDevice device, string filename) => Check(device, filename, CheckPass.Plain);

    /// <summary>
    /// The check as one of qemu-img's passes: <see cref="CheckPass.Plain"/> is <c>qemu-img check</c>;
    /// the repair passes count and compare the same way but stop before the COPIED check (the
    /// repair runs it after fixing refcounts) and record what a rebuild needs.
    /// </summary>
    internal static CheckResult Check(IBlockDevice device, string filename, CheckPass pass)
    {
        var ctx = Open(device, filename, pass);
        StoredRefcounts? stored = null;
        try
        {
            var snapshots = ReadSnapshotTable(ctx, out var snapshotsSize);
            stored = new StoredRefcounts(ctx);
            var walk = new ReferenceWalk(ctx, stored);
            walk.Run(snapshots, snapshotsSize);
            var r = ctx.Result;
            r.PreCompareCorruptions = r.Corruptions;
            r.PreCompareLeaks = r.Leaks;
            r.PreCompareCheckErrors = r.CheckErrors;
            r.CompareMessageStart = r._messages.Count;
            Compare(ctx, stored, walk);
            if (pass == CheckPass.Plain) CopiedFlagCheck.Run(ctx, stored, repair: false);
        }
        catch (AbortCheck abort)
        {
            ctx.Result.AbortReason = abort.Message;
        }
        catch (IOException)
        {
            ctx.Result.CheckErrors++;
            ctx.Result.AbortReason ??= "Input/output error";
        }
        finally
        {
            stored?.Dispose();
        }
        return ctx.Result;
    }

    /// <summary>
    /// Checks the COPIED flags of the active L1 and L2 tables against the stored refcounts as they
    /// are now (qemu's check_oflag_copied), rewriting wrong flags when <paramref name="repair"/> is set.
    /// The result carries the remaining <see cref="CheckResult.Corruptions"/> and the fixed count.
    /// </summary>
    internal static CheckResult FixCopiedFlags(IBlockDevice device, string filename, bool repair)
    {
        var ctx = Open(device, filename, CheckPass.Plain);
        try
        {
            using var stored = new StoredRefcounts(ctx);
            CopiedFlagCheck.Run(ctx, stored, repair);
        }
        catch (AbortCheck abort)
        {
            ctx.Result.AbortReason = abort.Message;
        }
        catch (IOException)
        {
            ctx.Result.CheckErrors++;
            ctx.Result.AbortReason ??= "Input/output error";
        }
        return ctx.Result;
    }

    private static CheckContext Open(IBlockDevice device, string filename, CheckPass pass)
    {
        var meta = ImageMetadata.Load(device, ValidationProfile.Check);
        return new CheckContext(device, meta, new CheckResult { Filename = filename, RefcountBits = meta.RefcountBits }, pass);
    }

    /// <summary>The snapshot table, judged as qemu's check judges it (a bad header field ends the check).</summary>
    private static IReadOnlyList<SnapshotEntry> ReadSnapshotTable(CheckContext ctx, out long size)
    {
        var meta = ctx.Meta;
        var r = ctx.Result;
        size = 0;
        if (meta.SnapshotCount > Qcow2Header.MaxSnapshots)
        {
            r.CheckErrors++;
            ctx.Error("q2a: ERROR snapshot table too large");
            ctx.Error($"You can force-remove all {meta.SnapshotCount - Qcow2Header.MaxSnapshots} overhanging snapshots with qemu-img check -r all");
            throw new AbortCheck("File too large");
        }
        var bytes = (ulong)meta.SnapshotCount * SnapshotEntry.FixedSize;
        if (meta.SnapshotsOffset > long.MaxValue || (meta.SnapshotsOffset & (ulong)(ctx.ClusterSize - 1)) != 0 || bytes > long.MaxValue - meta.SnapshotsOffset)
        {
            r.CheckErrors++;
            ctx.Error("q2a: ERROR snapshot table offset invalid");
            throw new AbortCheck("Invalid argument");
        }
        IReadOnlyList<SnapshotEntry> snapshots;
        try
        {
            (snapshots, size) = ImageMetadata.ReadSnapshots(ctx.Device, meta, ValidationProfile.Check);
        }
        catch (Qcow2FormatException e)
        {
            r.CheckErrors++;
            ctx.Error($"q2a: ERROR failed to read the snapshot table: {QemuImgWording.SnapshotProblem(e)}");
            throw new AbortCheck("File too large");
        }
        if (meta.Version >= 3)
        {
            for (var i = 0; i < snapshots.Count; i++)
                if (snapshots[i].ExtraDataSize < SnapshotEntry.MinV3ExtraDataSize)
                    ctx.Corruption($"ERROR snapshot table entry {i} is incomplete");
        }
        return snapshots;
    }

    /// <summary>qemu's compare_refcounts: each cluster's stored refcount against its counted references.</summary>
    private static void Compare(CheckContext ctx, StoredRefcounts stored, ReferenceWalk walk)
    {
        var r = ctx.Result;
        var counts = walk.Counts;
        long highest = 0;
        for (long i = 0; i < counts.Count; i++)
        {
            if (!stored.TryGet(i, out var refcount))
            {
                ctx.Error($"Can't get refcount for cluster {i}: Input/output error");
                r.CheckErrors++;
                continue;
            }
            ulong counted = counts[i];
            if (refcount > 0 || counted > 0) highest = i;
            if (refcount == counted) continue;
            if (refcount == 0) r.NeedsRebuild = true;
            r._mismatches.Add(new RefcountMismatch(i, refcount, counted));
            if (refcount < counted)
            {
                r.Corruptions++;
                ctx.Error($"ERROR cluster {i} refcount={refcount} reference={counted}");
            }
            else
            {
                r.Leaks++;
                ctx.Error($"Leaked cluster {i} refcount={refcount} reference={counted}");
            }
        }
        r.ImageEndOffset = (highest + 1) * ctx.ClusterSize;
        foreach (var cluster in walk.RefblocksOutsideImage)
        {
            // The cluster qemu would have grown the file to: one reference (the block), refcount
            // read from the block qemu just zeroed.
            if (stored.TryGet(cluster, out var refcount) && refcount < 1)
                ctx.Corruption($"ERROR cluster {cluster} refcount={refcount} reference=1");
        }
    }
}
