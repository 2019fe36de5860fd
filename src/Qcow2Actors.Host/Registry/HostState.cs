namespace Qcow2Actors.Host.Registry;

/// <summary>
/// What the host keeps across restarts (DATA_DIR/host-state.json): everything changed through the API.
/// Images marked <see cref="PersistedImage.Open"/> are reopened at start, exports re-added, limits reapplied.
/// </summary>
internal sealed record HostState
{
    public int Version { get; init; } = 1;
    public List<PersistedTenant> Tenants { get; init; } = [];
    public List<PersistedImage> Images { get; init; } = [];
    public List<PersistedExport> Exports { get; init; } = [];
    public List<PersistedLimit> Limits { get; init; } = [];
    public List<PersistedToken> Tokens { get; init; } = [];
}

internal sealed record PersistedTenant(string Name, long? Quota, int? MaxImages, bool Revoked = false);

/// <summary>A tenant's API token: only the SHA-256 of the token is kept (hex), never the token.</summary>
internal sealed record PersistedToken(string Id, string Tenant, string Sha256, DateTimeOffset Created);

internal sealed record PersistedImage(string Tenant, string Name, bool Open);

/// <summary>
/// An export; <see cref="Bitmaps"/> and <see cref="AllocationDepth"/> are its extra NBD metadata contexts (absent in
/// older files: none); <see cref="Record"/> the log it was recording into when saved (a restart ends the recording).
/// </summary>
internal sealed record PersistedExport(string Name, string Tenant, string Image, bool ReadOnly,
    IReadOnlyList<string>? Bitmaps = null, bool AllocationDepth = false, string? Record = null);

/// <summary>A limit: <see cref="Scope"/> "export" or "tenant", its target name, and the values.</summary>
internal sealed record PersistedLimit(string Scope, string Target, LimitValues Values);
