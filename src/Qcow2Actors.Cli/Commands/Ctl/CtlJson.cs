using System.Text.Encodings.Web;
using System.Text.Json;

namespace Qcow2Actors.Cli.Commands.Ctl;

/// <summary>How <c>--output json</c> prints a reply (the wire's conventions are the host's <c>HostJson.Options</c>).</summary>
internal static class CtlJson
{
    private static readonly JsonWriterOptions Indented = new() { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>The reply's JSON, indented, ending in a newline (nothing for an empty reply such as 204).</summary>
    public static string Pretty(string json)
    {
        if (string.IsNullOrWhiteSpace(json)) return "";
        using var doc = JsonDocument.Parse(json);
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer, Indented)) doc.WriteTo(writer);
        return System.Text.Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length) + "\n";
    }
}
