using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Config;

/// <summary>
/// A tenant as the config file states it (<c>qcow2actors.host.tenants.NAME</c>): null fields are not stated (left as the
/// API set them), 0 means unlimited.
/// </summary>
internal sealed record TenantConfig(string Name, long? Quota, int? MaxImages, LimitValues? Limits)
{
    /// <summary>Client certificate subjects (distinguished names) or subject alternative names that are this tenant over NBD TLS.</summary>
    public IReadOnlyList<string> Identities { get; init; } = [];
}
