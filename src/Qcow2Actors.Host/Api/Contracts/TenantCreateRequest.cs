namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>POST /v1/tenants.</summary>
public sealed record TenantCreateRequest
{
    /// <summary>Tenant name: [A-Za-z0-9._-]{1,64}, not starting with '.'.</summary>
    public required string Name { get; init; }
    /// <summary>Bytes of allocated clusters the tenant's images may hold together; null or 0: unlimited.</summary>
    public long? Quota { get; init; }
    /// <summary>Most images the tenant may have; null or 0: unlimited.</summary>
    public int? MaxImages { get; init; }
}
