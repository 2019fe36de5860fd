using System.Globalization;
using System.Text.Json;

namespace Qcow2Actors.Cli.Sources;

/// <summary>
/// QEMU's <c>json:{...}</c> pseudo-protocol: a JSON object of block options, nested objects and
/// dotted keys meaning the same (<c>{"file":{"filename":"a"}}</c> = <c>{"file.filename":"a"}</c>).
/// Flattened here into the dotted key=value pairs <c>--image-opts</c> gives, so one resolver serves both.
/// </summary>
internal static class JsonImageOptions
{
    /// <summary>The prefix that marks the pseudo-protocol.</summary>
    public const string Prefix = "json:";

    /// <summary>The flattened options of <paramref name="argument"/> (which starts with <see cref="Prefix"/>).</summary>
    public static List<KeyValuePair<string, string>> Parse(string argument)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(argument[Prefix.Length..]);
        }
        catch (JsonException ex)
        {
            throw new SourceException($"Could not parse the JSON options: JSON parse error, {ex.Message.Split(" Path:")[0].TrimEnd('.')}", ex);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new SourceException("Invalid JSON object given");
            var result = new List<KeyValuePair<string, string>>();
            Flatten(doc.RootElement, "", result);
            return result;
        }
    }

    private static void Flatten(JsonElement element, string prefix, List<KeyValuePair<string, string>> into)
    {
        foreach (var p in element.EnumerateObject())
        {
            string key = prefix + p.Name;
            switch (p.Value.ValueKind)
            {
                case JsonValueKind.Object:
                    Flatten(p.Value, key + ".", into);
                    break;
                case JsonValueKind.String:
                    into.Add(new(key, p.Value.GetString()!));
                    break;
                case JsonValueKind.Number:
                    into.Add(new(key, p.Value.GetRawText()));
                    break;
                case JsonValueKind.True or JsonValueKind.False:
                    into.Add(new(key, p.Value.GetBoolean() ? "on" : "off"));
                    break;
                default:
                    throw new SourceException(string.Create(CultureInfo.InvariantCulture,
                        $"Invalid value for option '{key}': {p.Value.ValueKind.ToString().ToLowerInvariant()} is not supported here"));
            }
        }
    }
}
