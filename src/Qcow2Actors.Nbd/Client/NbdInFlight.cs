namespace Qcow2Actors.Nbd.Client;

/// <summary>
/// The requests awaiting replies, by cookie. Once the connection has ended every request in it fails with the
/// reason, and so does every request registered afterwards.
/// </summary>
internal sealed class NbdInFlight
{
    private readonly Lock _gate = new();
    private readonly Dictionary<ulong, NbdPendingRequest> _requests = [];
    private ulong _nextCookie;
    private Exception? _closed;

    public ulong Register(NbdPendingRequest request)
    {
        lock (_gate)
        {
            if (_closed is not null) throw _closed;
            var cookie = ++_nextCookie;
            _requests.Add(cookie, request);
            return cookie;
        }
    }

    public NbdPendingRequest? Find(ulong cookie)
    {
        lock (_gate) return _requests.GetValueOrDefault(cookie);
    }

    public void Remove(ulong cookie)
    {
        lock (_gate) _requests.Remove(cookie);
    }

    public int Count
    {
        get { lock (_gate) return _requests.Count; }
    }

    /// <summary>Why the connection ended, or null while it is open.</summary>
    public Exception? ClosedReason
    {
        get { lock (_gate) return _closed; }
    }

    /// <summary>Ends the connection's life: fails every waiting request with <paramref name="reason"/> (the first reason wins).</summary>
    public void Close(Exception reason)
    {
        NbdPendingRequest[] waiting;
        lock (_gate)
        {
            _closed ??= reason;
            waiting = [.. _requests.Values];
            _requests.Clear();
        }
        foreach (var request in waiting) request.Fail(_closed);
    }
}
