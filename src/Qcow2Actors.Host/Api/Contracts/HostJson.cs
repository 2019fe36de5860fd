using System.Text.Json;
using System.Text.Json.Serialization;

namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>The JSON settings of the control API, shared by the host and its clients (camelCase, enums as strings, nulls left out).</summary>
public static class HostJson
{
    /// <summary>Web defaults (camelCase, case-insensitive reading) with null properties omitted.</summary>
    public static JsonSerializerOptions Options { get; } = Create();

    private static JsonSerializerOptions Create()
    {
        var options = new JsonSerializerOptions(JsonSerializerDefaults.Web)
        {
            DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        };
        options.MakeReadOnly(populateMissingResolver: true);
        return options;
    }

    /// <summary>Applies the same settings to <paramref name="options"/> (ASP.NET Core's own instance).</summary>
    public static void Configure(JsonSerializerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.PropertyNamingPolicy = JsonNamingPolicy.CamelCase;
        options.PropertyNameCaseInsensitive = true;
        options.DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull;
    }
}
