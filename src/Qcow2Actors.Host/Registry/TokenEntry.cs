namespace Qcow2Actors.Host.Registry;

/// <summary>A tenant's API token as the host knows it: id, tenant, SHA-256 of the token, creation time.</summary>
internal sealed record TokenEntry(string Id, string Tenant, byte[] Hash, DateTimeOffset Created);
