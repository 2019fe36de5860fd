using System.Text.Json.Serialization;

namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>Where an image stands in the host.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<ImageState>))]
public enum ImageState
{
    /// <summary>Open in the engine (it may be exported).</summary>
    [JsonStringEnumMemberName("open")] Open,
    /// <summary>Closed cleanly; the file is on disk.</summary>
    [JsonStringEnumMemberName("closed")] Closed,
    /// <summary>Faulted (read-only after an I/O error, corruption found, file gone); see the reason.</summary>
    [JsonStringEnumMemberName("failed")] Failed,
}
