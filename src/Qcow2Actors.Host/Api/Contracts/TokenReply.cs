namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>A tenant's API token: its id and creation time; the token itself only in the reply that created it.</summary>
public sealed record TokenReply
{
    /// <summary>The token's id: names it in lists, the audit log and <c>DELETE .../tokens/{id}</c>; not a secret.</summary>
    public required string Id { get; init; }
    /// <summary>The tenant the token acts for (and is confined to).</summary>
    public required string Tenant { get; init; }
    /// <summary>When the host made it.</summary>
    public DateTimeOffset Created { get; init; }
    /// <summary>The bearer token; present only in the reply to its creation (the host keeps only its SHA-256).</summary>
    public string? Token { get; init; }
}
