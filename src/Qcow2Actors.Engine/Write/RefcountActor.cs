using Akka.Actor;
using Akka.Event;

namespace Qcow2Actors.Engine.Write;

/// <summary>
/// The messaging front of an image's refcounts for actors that Tell (the image actor's resize
/// and checkpoint, the journal's quarantine releases). It keeps no state: every change goes
/// through the image's one <see cref="RefcountAllocator"/>, which table actors also call
/// directly. What it adds is order: a release of freed clusters (punch, then allocatable again)
/// runs in this mailbox, so a checkpoint's write-back sent after it finds it done.
/// </summary>
internal sealed class RefcountActor : ReceiveActor
{
    private readonly BlockingIo _io;

    public RefcountActor(ImageContext ctx, RefcountAllocator refcounts)
    {
        _io = ctx.Io ?? BlockingIo.For(Context.System);
        Receive<AllocateClusters>(m => Reply(m.Reply, () => refcounts.Allocate(m.Count)));
        Receive<AllocateCompressedBytes>(m => Reply(m.Reply, () => refcounts.AllocateCompressed(m.Length)));
        Receive<AdjustRefcounts>(m =>
        {
            try
            {
                var counts = refcounts.Adjust(m.Clusters, m.Delta);
                m.Reply?.TrySetResult(counts);
            }
            catch (Exception ex)
            {
                m.Reply?.TrySetException(ex);
            }
        });
        Receive<GetRefcounts>(m => Reply(m.Reply, () => refcounts.Get(m.Clusters)));
        ReceiveAsync<ReleaseQuarantine>(async m =>
        {
            // A write of the lock-free fast path may still be in flight to one of these clusters:
            // neither punch nor reuse may come before it lands (ClusterLeases).
            await ctx.Leases.WhenFree(m.Clusters);
            // The records that freed these clusters are durable: give their space back to the host
            // BEFORE they become allocatable (a punch after reuse would destroy new data). On an I/O
            // thread, as the journal does its file I/O; the mailbox waits meanwhile.
            try
            {
                await _io.Run(() => PunchFreed(ctx, m.Clusters));
            }
            catch (Exception ex) when (ex is IOException or ObjectDisposedException)
            {
                // Not giving space back wastes it but loses nothing; the clusters stay free.
                Context.GetLogger().Warning("'{0}': could not give freed clusters back to the host: {1}", ctx.Path, ex.Message);
            }
            refcounts.Release(m.Clusters);
        });
        ReceiveAsync<WriteBackRefcounts>(async m =>
        {
            try
            {
                // Written on an I/O thread (blocking writes); the table actors are paused meanwhile.
                var table = await _io.Run(() =>
                {
                    // Nothing is written in place once the image turned read-only (a corrupt image above all).
                    ctx.ThrowIfReadOnly();
                    try
                    {
                        return refcounts.WriteBack();
                    }
                    catch (Qcow2ImageCorruptException ex)
                    {
                        throw ctx.MarkCorrupt(ex.Message);
                    }
                });
                m.Reply.TrySetResult(table);
            }
            catch (Exception ex)
            {
                m.Reply.TrySetException(ex);
            }
        });
    }

    private static void Reply<T>(TaskCompletionSource<T> reply, Func<T> body)
    {
        try
        {
            reply.TrySetResult(body());
        }
        catch (Exception ex)
        {
            reply.TrySetException(ex);
        }
    }

    /// <summary>Punches every run of contiguous freed clusters out of the image file (one fallocate per run).</summary>
    internal static void PunchFreed(ImageContext ctx, long[] clusters)
    {
        if (clusters.Length == 0 || ctx.ReadOnlyReason is not null) return;
        var sorted = clusters.Order().ToArray();
        int bits = ctx.Geometry.ClusterBits;
        long runStart = sorted[0], runEnd = sorted[0] + 1;
        foreach (var c in sorted.Skip(1))
        {
            if (c == runEnd) { runEnd++; continue; }
            if (c < runEnd) continue;
            ctx.Device.PunchHole(runStart << bits, (runEnd - runStart) << bits);
            runStart = c;
            runEnd = c + 1;
        }
        ctx.Device.PunchHole(runStart << bits, (runEnd - runStart) << bits);
    }

    /// <summary>Props for the refcount actor of an image.</summary>
    public static Props Props(ImageContext ctx, RefcountAllocator refcounts) =>
        Akka.Actor.Props.Create(() => new RefcountActor(ctx, refcounts));
}
