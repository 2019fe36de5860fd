namespace Qcow2Actors.Nbd;

/// <summary>
/// Open connections per tenant, for <see cref="NbdServerOptions.MaxConnectionsPerTenant"/>: a connection is counted
/// when it enters (if the tenant is under its bound) and uncounted when it closes. Thread-safe.
/// </summary>
internal sealed class TenantConnectionCounts
{
    private readonly Lock _lock = new();
    private readonly Dictionary<string, int> _counts = new(StringComparer.Ordinal);

    /// <summary>Counts one more connection for <paramref name="tenant"/> unless it has <paramref name="max"/> already (0: no bound).</summary>
    public bool TryEnter(string tenant, int max)
    {
        lock (_lock)
        {
            var count = _counts.GetValueOrDefault(tenant);
            if (max != 0 && count >= max) return false;
            _counts[tenant] = count + 1;
            return true;
        }
    }

    /// <summary>One of <paramref name="tenant"/>'s connections closed.</summary>
    public void Leave(string tenant)
    {
        lock (_lock)
        {
            var count = _counts.GetValueOrDefault(tenant) - 1;
            if (count > 0) _counts[tenant] = count;
            else _counts.Remove(tenant);
        }
    }

    /// <summary>Connections counted for <paramref name="tenant"/> now.</summary>
    public int Count(string tenant)
    {
        lock (_lock) return _counts.GetValueOrDefault(tenant);
    }
}
