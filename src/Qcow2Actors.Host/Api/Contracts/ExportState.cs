using System.Text.Json.Serialization;

namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>Whether an export's image is usable.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<ExportState>))]
public enum ExportState
{
    /// <summary>Served normally.</summary>
    [JsonStringEnumMemberName("ok")] Ok,
    /// <summary>Its image failed; requests get errors (see the reason).</summary>
    [JsonStringEnumMemberName("failed")] Failed,
}
