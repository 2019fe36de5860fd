using Qcow2Actors.Host.Config;
using Qcow2Actors.Nbd;

namespace Qcow2Actors.Host.Registry;

internal sealed partial class HostRegistry
{
    // Tenant -> the certificate names that are it; config only (qcow2actors.host.tenants.NAME.identities), replaced
    // whole at start and on SIGHUP and read without a lock by NBD handshakes.
    private volatile IReadOnlyList<(string Tenant, IReadOnlyList<string> Names)> _identities = [];

    /// <summary>Takes the identities the config file states (tenants it does not list lose theirs).</summary>
    private void SetIdentities(IReadOnlyList<TenantConfig> tenants) =>
        _identities = [.. tenants.Where(t => t.Identities.Count > 0).Select(t => (t.Name, t.Identities))];

    /// <summary>
    /// The tenant an NBD client is, from its verified certificate: the tenant one of whose identities is the
    /// certificate's subject, else one naming a subject alternative name of it; null (shared exports only) for
    /// a client without TLS or a certificate no tenant names.
    /// </summary>
    public string? ResolveTenant(NbdClientIdentity identity)
    {
        ArgumentNullException.ThrowIfNull(identity);
        if (!identity.Tls) return null;
        var identities = _identities;
        var tenant = identities.FirstOrDefault(t => t.Names.Any(identity.SubjectIs)).Tenant
            ?? identities.FirstOrDefault(t => t.Names.Any(n => identity.AlternativeNames.Contains(n, StringComparer.OrdinalIgnoreCase))).Tenant;
        // A revoked tenant's certificates are no one's until it is restored.
        if (tenant is null || _tenants.GetValueOrDefault(tenant) is not { Revoked: false }) return null;
        return tenant;
    }
}
