using Akka.Actor;

namespace Qcow2Actors.Engine.Write;

/// <summary>
/// The live table actors that callers may send table operations to directly, without a hop through the image actor.
/// The image actor alone opens and closes routes; a caller that finds no open route sends through the image actor,
/// which starts the table actor if needed and opens its route.
/// </summary>
/// <remarks>
/// Why: an allocating write went caller → image actor → table actor, two thread-pool hand-offs for a dictionary look-up
/// in between. The image actor's bookkeeping that needed to see every request (least recently used tables, idle
/// timeouts, the budget's activity) reads here what the callers left instead (<see cref="Harvest"/>).
/// The rule that keeps a direct message from reaching a table actor that will not run it: the image actor closes a
/// table's route, which waits for the callers sending on it to leave, before it sends that actor anything after which
/// a later message could be dropped or stranded (StopIfClean, a pause before a stop, a stop); every message sent on
/// the route is then in the actor's mailbox ahead of it.
/// </remarks>
internal sealed class TableRoutes(TimeProvider time)
{
    private sealed class Route(IActorRef table, long openedAt)
    {
        public readonly IActorRef Table = table;
        // Callers sending now (>= 0), or Closed.
        public int Senders;
        // When a caller last sent on it (time's timestamp), and whether one did since the image actor last looked.
        public long LastUseAt = openedAt;
        public int Used;
    }

    private const int Closed = -1;

    private Route?[] _routes = [];

    /// <summary>
    /// Sends <paramref name="message"/> to the live table actor of L1 entry <paramref name="index"/> if its route is
    /// open; false (nothing sent) otherwise: then send it through the image actor.
    /// </summary>
    public bool TryTell(int index, object message)
    {
        var routes = Volatile.Read(ref _routes);
        if ((uint)index >= (uint)routes.Length || Volatile.Read(ref routes[index]) is not { } route) return false;
        int senders = Volatile.Read(ref route.Senders);
        while (true)
        {
            if (senders == Closed) return false;
            int seen = Interlocked.CompareExchange(ref route.Senders, senders + 1, senders);
            if (seen == senders) break;
            senders = seen;
        }
        try
        {
            route.Table.Tell(message);
            Volatile.Write(ref route.LastUseAt, time.GetTimestamp());
            Volatile.Write(ref route.Used, 1);
        }
        finally
        {
            Interlocked.Decrement(ref route.Senders);
        }
        return true;
    }

    /// <summary>Opens the route to <paramref name="table"/>, the live actor of <paramref name="index"/> (image actor only).</summary>
    public void Open(int index, IActorRef table)
    {
        var routes = _routes;
        if (index < routes.Length && routes[index] is { } open)
        {
            if (open.Table.Equals(table) && open.Senders != Closed) return;
            Close(index); // another actor's route: its senders leave first
        }
        if (index >= routes.Length)
        {
            var grown = new Route?[Math.Max(index + 1, routes.Length * 2)];
            routes.CopyTo(grown, 0);
            Volatile.Write(ref _routes, grown);
            routes = grown;
        }
        Volatile.Write(ref routes[index], new Route(table, time.GetTimestamp()));
    }

    /// <summary>
    /// Closes the route of <paramref name="index"/> (image actor only) and returns once no caller is still sending on
    /// it: every message sent on it is then in the table actor's mailbox. No-op when it is not open.
    /// </summary>
    public void Close(int index)
    {
        var routes = _routes;
        if (index >= routes.Length || routes[index] is not { } route) return;
        Volatile.Write(ref routes[index], null);
        // A sender holds the route only across a Tell (an enqueue): the wait is that long, unless its thread is
        // descheduled right there, which SpinWait sits out by yielding.
        var spin = new SpinWait();
        while (Interlocked.CompareExchange(ref route.Senders, Closed, 0) is not (0 or Closed)) spin.SpinOnce();
    }

    /// <summary>Closes the route of <paramref name="index"/> as <see cref="Close(int)"/> does, only if it leads to <paramref name="table"/>.</summary>
    public void Close(int index, IActorRef table)
    {
        var routes = _routes;
        if (index < routes.Length && routes[index] is { } route && route.Table.Equals(table)) Close(index);
    }

    /// <summary>Closes every open route (image actor only), as <see cref="Close(int)"/> does each.</summary>
    public void CloseAll()
    {
        for (int i = 0; i < _routes.Length; i++) Close(i);
    }

    /// <summary>
    /// The tables callers sent to directly since the last harvest, with the time of their last send, oldest first
    /// (image actor only), so its least-recently-used order and idle timeouts count direct sends too.
    /// </summary>
    public List<(int Index, long LastUseAt)> Harvest()
    {
        List<(int, long)> used = [];
        var routes = _routes;
        for (int i = 0; i < routes.Length; i++)
        {
            if (routes[i] is not { } route || Interlocked.Exchange(ref route.Used, 0) == 0) continue;
            used.Add((i, Volatile.Read(ref route.LastUseAt)));
        }
        used.Sort((a, b) => a.Item2.CompareTo(b.Item2));
        return used;
    }
}
