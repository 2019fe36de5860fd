using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Qcow2Actors.Cli.Commands.Ctl;

/// <summary>
/// ctl's human output: qemu-img's <c>key: value</c> lines for one object, and tables with a header row
/// and columns as wide as their widest cell (numbers right-aligned) for lists.
/// </summary>
internal static class CtlFormat
{
    /// <summary>A table column: its header and whether its cells are right-aligned (numbers, sizes).</summary>
    public readonly record struct Column(string Header, bool Right = false);

    /// <summary>
    /// The rows under a header line, two spaces between columns, no trailing spaces. Empty
    /// <paramref name="rows"/> still print the header, so a script sees the columns.
    /// </summary>
    public static string Table(IReadOnlyList<Column> columns, IEnumerable<IReadOnlyList<string>> rows)
    {
        var all = new List<IReadOnlyList<string>> { columns.Select(c => c.Header).ToArray() };
        all.AddRange(rows);
        var widths = new int[columns.Count];
        foreach (var row in all)
            for (int i = 0; i < columns.Count; i++) widths[i] = Math.Max(widths[i], row[i].Length);
        var sb = new StringBuilder();
        foreach (var row in all)
        {
            var line = new StringBuilder();
            for (int i = 0; i < columns.Count; i++)
            {
                if (i > 0) line.Append("  ");
                var last = i == columns.Count - 1;
                if (columns[i].Right) line.Append(row[i].PadLeft(widths[i]));
                else line.Append(last ? row[i] : row[i].PadRight(widths[i]));
            }
            sb.Append(line.ToString().TrimEnd()).Append('\n');
        }
        return sb.ToString();
    }

    /// <summary><c>key: value</c> lines; a null value leaves its line out.</summary>
    public static string Lines(params (string Key, string? Value)[] lines)
    {
        var sb = new StringBuilder();
        foreach (var (key, value) in lines)
            if (value is not null) sb.Append(key).Append(": ").Append(value).Append('\n');
        return sb.ToString();
    }

    /// <summary>A size as qemu-img prints it in tables: <c>1 GiB</c>.</summary>
    public static string Size(long bytes) => Formats.SizeToString(bytes);

    /// <summary>A size as qemu-img info prints it: <c>1 GiB (1073741824 bytes)</c>.</summary>
    public static string SizeAndBytes(long bytes) => string.Create(CultureInfo.InvariantCulture, $"{Formats.SizeToString(bytes)} ({bytes} bytes)");

    /// <summary>A number, or <c>-</c> when absent or 0 where 0 means "no limit".</summary>
    public static string Limit(long? value) => value is null or 0 ? "-" : value.Value.ToString(CultureInfo.InvariantCulture);

    /// <summary>A byte rate or size limit, or <c>-</c> when absent or 0.</summary>
    public static string SizeLimit(long? value) => value is null or 0 ? "-" : Size(value.Value);

    /// <summary>A whole number in invariant digits.</summary>
    public static string Number(long value) => value.ToString(CultureInfo.InvariantCulture);

    /// <summary>
    /// A JSON object (an image's <c>q2a info --output json</c>) as indented <c>key: value</c> lines, the way
    /// qemu-img prints its format-specific block: nested objects indent by 4, lists of objects number their items.
    /// </summary>
    public static string Json(JsonElement element, int indent)
    {
        var sb = new StringBuilder();
        AppendObject(sb, element, indent);
        return sb.ToString();
    }

    private static void AppendObject(StringBuilder sb, JsonElement obj, int indent)
    {
        foreach (var property in obj.EnumerateObject()) AppendValue(sb, property.Name, property.Value, indent);
    }

    private static void AppendValue(StringBuilder sb, string key, JsonElement value, int indent)
    {
        var pad = new string(' ', indent * 4);
        switch (value.ValueKind)
        {
            case JsonValueKind.Object:
                sb.Append(pad).Append(key).Append(":\n");
                AppendObject(sb, value, indent + 1);
                break;
            case JsonValueKind.Array when value.EnumerateArray().Any(v => v.ValueKind is JsonValueKind.Object or JsonValueKind.Array):
                sb.Append(pad).Append(key).Append(":\n");
                int n = 0;
                foreach (var item in value.EnumerateArray())
                {
                    if (item.ValueKind == JsonValueKind.Object)
                    {
                        sb.Append(pad).Append("    [").Append(n).Append("]:\n");
                        AppendObject(sb, item, indent + 2);
                    }
                    else AppendValue(sb, $"[{n}]", item, indent + 1);
                    n++;
                }
                break;
            case JsonValueKind.Array:
                sb.Append(pad).Append(key).Append(": ").Append(string.Join(", ", value.EnumerateArray().Select(Scalar))).Append('\n');
                break;
            default:
                sb.Append(pad).Append(key).Append(": ").Append(Scalar(value)).Append('\n');
                break;
        }
    }

    private static string Scalar(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.String => value.GetString()!,
        JsonValueKind.Null => "-",
        _ => value.GetRawText(),
    };
}
