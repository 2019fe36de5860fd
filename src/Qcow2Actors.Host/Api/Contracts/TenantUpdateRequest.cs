namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>PATCH /v1/tenants/{tenant}: the fields given change at once; absent ones stay.</summary>
public sealed record TenantUpdateRequest
{
    /// <summary>New byte quota; 0: unlimited; null: unchanged.</summary>
    public long? Quota { get; init; }
    /// <summary>New image limit; 0: unlimited; null: unchanged.</summary>
    public int? MaxImages { get; init; }
}
