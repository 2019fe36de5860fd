using Akka.Actor.Internal;
using Akka.Dispatch;

namespace Qcow2Actors.Engine.Write;

/// <summary>
/// Lets a thread that may wait on the device run the table actor it just sent a write to, instead of queueing that
/// actor's mailbox to the thread pool and waiting for a pool thread to pick it up.
/// </summary>
/// <remarks>
/// Why: an allocating write from an NBD connection crossed one thread hand-off (reader → pool thread running the
/// table actor), and on two cores that hand-off (a futex wake, the pool's idle spin, two threads sharing caches)
/// cost about as much as the write itself: allocwrite went from ~48k to ~71k IOPS and from ~28 to ~15 µs of server
/// CPU per write without it (bench/results/allocwrite-inline-dispatch-2026-12-02.md).
/// The actor model is kept: the mailbox is run only after Akka scheduled it (the mailbox's own claim makes the run
/// exclusive), by <see cref="TableDispatcher"/>, which defers it to this scope instead of the pool. The run happens
/// once the caller has left whatever it held while sending (a route's sender count: <see cref="RunDeferred"/> right
/// after the send returned, or when the scope closes), so nobody waits on the write but the caller. Only one mailbox
/// is deferred at a time; a second goes to the pool, and sends made while a deferred mailbox runs go to the pool too
/// (no nesting).
/// </remarks>
internal static class InlineDispatch
{
    [ThreadStatic] private static bool t_open;
    [ThreadStatic] private static IRunnable? t_deferred;

    /// <summary>
    /// Opens a scope on this thread; false (nothing opened, do not close) when one is open already, when this thread is
    /// running an actor (a mailbox run here would reset the actor context Akka keeps per thread under it), or when the
    /// caller has a synchronization context or task scheduler of its own (the table actor's awaits would post their
    /// continuations to it, and a caller that blocks on the write there would never see it end).
    /// </summary>
    public static bool Open()
    {
        if (t_open || InternalCurrentActorCellKeeper.Current is not null
            || SynchronizationContext.Current is not null || TaskScheduler.Current != TaskScheduler.Default)
            return false;
        t_open = true;
        return true;
    }

    /// <summary>Runs the mailbox deferred to the scope <see cref="Open"/> opened, if any, here, and closes the scope.</summary>
    public static void Close()
    {
        try
        {
            RunDeferred();
        }
        finally
        {
            t_open = false;
        }
    }

    /// <summary>
    /// Runs the mailbox deferred to this thread's open scope now, if any, and keeps the scope open: a write that goes on
    /// to other tables does not hold this actor's mailbox (taken, not running) while it does.
    /// </summary>
    public static void RunDeferred()
    {
        var deferred = t_deferred;
        if (deferred is null) return;
        t_deferred = null;
        t_open = false; // sends made by the run go to the pool
        try
        {
            deferred.Run();
        }
        finally
        {
            t_open = true;
        }
    }

    /// <summary>Takes <paramref name="run"/> for this thread's open scope; false when there is none or it holds one already.</summary>
    public static bool TryDefer(IRunnable run)
    {
        if (!t_open || t_deferred is not null) return false;
        t_deferred = run;
        return true;
    }
}
