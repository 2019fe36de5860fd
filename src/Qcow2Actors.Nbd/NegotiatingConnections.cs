using Qcow2Actors.Nbd.Protocol;

namespace Qcow2Actors.Nbd;

/// <summary>
/// Connections still negotiating, oldest first, for <see cref="NbdServerOptions.MaxNegotiatingConnections"/>: when
/// there are too many the oldest goes, so a flood of idle handshakes cannot keep a client that negotiates at once
/// from getting in. Each connection holds its own node (<see cref="NbdConnection.NegotiationNode"/>), so leaving is
/// O(1). Thread-safe.
/// </summary>
internal sealed class NegotiatingConnections
{
    private readonly Lock _lock = new();
    private readonly LinkedList<NbdConnection> _list = new();

    /// <summary>Connections negotiating now.</summary>
    public int Count
    {
        get { lock (_lock) return _list.Count; }
    }

    /// <summary>
    /// Takes the oldest connection out of the list when <paramref name="max"/> or more are negotiating, and returns it
    /// (the caller closes it), with the count seen; null when there is room.
    /// </summary>
    public NbdConnection? EvictOldestAtOrOver(int max, out int negotiating)
    {
        lock (_lock)
        {
            negotiating = _list.Count;
            if (negotiating < max || _list.First is not { } oldest) return null;
            _list.RemoveFirst();
            oldest.Value.NegotiationNode = null;
            return oldest.Value;
        }
    }

    /// <summary>A new connection starts negotiating.</summary>
    public void Add(NbdConnection connection)
    {
        lock (_lock) connection.NegotiationNode = _list.AddLast(connection);
    }

    /// <summary>The connection chose an export or closed (or was evicted already): it no longer counts.</summary>
    public void Remove(NbdConnection connection)
    {
        lock (_lock)
        {
            if (connection.NegotiationNode is not { } node) return;
            _list.Remove(node);
            connection.NegotiationNode = null;
        }
    }
}
