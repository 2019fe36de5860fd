namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>A tenant and what it uses.</summary>
public sealed record TenantReply
{
    /// <summary>Tenant name.</summary>
    public required string Name { get; init; }
    /// <summary>Byte quota on allocated clusters; null: unlimited.</summary>
    public long? Quota { get; init; }
    /// <summary>Image limit; null: unlimited.</summary>
    public int? MaxImages { get; init; }
    /// <summary>Bytes the tenant's images occupy (allocated clusters of open images, file sizes of closed ones).</summary>
    public long UsedBytes { get; init; }
    /// <summary>Images the tenant has.</summary>
    public int Images { get; init; }
    /// <summary>Revoked: its tokens are refused and its NBD clients cut off until it is restored.</summary>
    public bool Revoked { get; init; }
}
