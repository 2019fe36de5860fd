using System.Text.Json.Serialization;

namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>What a throttle group applies to.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<LimitScope>))]
public enum LimitScope
{
    /// <summary>One export alone.</summary>
    [JsonStringEnumMemberName("export")] Export,
    /// <summary>Every export of a tenant, sharing one group.</summary>
    [JsonStringEnumMemberName("tenant")] Tenant,
}
