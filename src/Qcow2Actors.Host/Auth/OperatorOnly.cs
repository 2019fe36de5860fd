namespace Qcow2Actors.Host.Auth;

/// <summary>
/// Endpoint metadata: host administration (tenants, limits, tokens, revocation, health, metrics) that a tenant
/// token may not do; it answers 403 forbidden. Everything else is open to a tenant within its own tenant.
/// </summary>
internal sealed class OperatorOnly
{
    public static readonly OperatorOnly Instance = new();

    private OperatorOnly() { }
}
