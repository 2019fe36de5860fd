using System.Text.Json.Serialization;

namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>GET /v1/health: the host's state at a glance.</summary>
public sealed record HealthReply
{
    /// <summary><see cref="HealthStatus.Ok"/>, or <see cref="HealthStatus.Degraded"/> while any image is failed.</summary>
    public required HealthStatus Status { get; init; }
    /// <summary>Tenants configured.</summary>
    public int Tenants { get; init; }
    /// <summary>Images known (open, closed or failed).</summary>
    public int Images { get; init; }
    /// <summary>Images open in the engine.</summary>
    public int OpenImages { get; init; }
    /// <summary>NBD exports served.</summary>
    public int Exports { get; init; }
    /// <summary>NBD client connections open.</summary>
    public int Connections { get; init; }
    /// <summary>Failed images as "TENANT/IMAGE".</summary>
    public IReadOnlyList<string> FailedImages { get; init; } = [];
}

/// <summary>Overall host health.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<HealthStatus>))]
public enum HealthStatus
{
    /// <summary>Every image is usable.</summary>
    [JsonStringEnumMemberName("ok")] Ok,
    /// <summary>At least one image is failed; the others are served.</summary>
    [JsonStringEnumMemberName("degraded")] Degraded,
}
