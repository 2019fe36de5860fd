using System.Text;

namespace Qcow2Actors.Cli.Sources;

/// <summary>
/// QEMU's option string syntax, as <c>--image-opts</c> and <c>--object</c> take it:
/// <c>key=value,key=value</c>, a doubled comma standing for a literal comma. A first item without
/// "=" is the value of <paramref name="implicitKey"/> when one is given (<c>--object secret,id=...</c>).
/// </summary>
internal static class KeyValueOptions
{
    /// <summary>The pairs in order; a repeated key keeps its last value, as QemuOpts does.</summary>
    public static List<KeyValuePair<string, string>> Parse(string text, string? implicitKey = null)
    {
        if (text.Length == 0) return [];
        var items = Split(text);
        var result = new List<KeyValuePair<string, string>>();
        for (int i = 0; i < items.Count; i++)
        {
            string item = items[i];
            int eq = item.IndexOf('=', StringComparison.Ordinal);
            if (eq < 0)
            {
                if (i == 0 && implicitKey is not null && item.Length > 0)
                {
                    result.Add(new(implicitKey, item));
                    continue;
                }
                if (item.Length == 0 && i == items.Count - 1 && i > 0) continue;
                throw new SourceException(item.Length == 0 ? "Invalid parameter ''" : $"Invalid parameter '{item}'", whole: true);
            }
            string key = item[..eq];
            result.RemoveAll(p => p.Key == key);
            result.Add(new(key, item[(eq + 1)..]));
        }
        return result;
    }

    private static List<string> Split(string text)
    {
        var items = new List<string>();
        var current = new StringBuilder();
        for (int i = 0; i < text.Length; i++)
        {
            if (text[i] == ',')
            {
                if (i + 1 < text.Length && text[i + 1] == ',')
                {
                    current.Append(',');
                    i++;
                    continue;
                }
                items.Add(current.ToString());
                current.Clear();
                continue;
            }
            current.Append(text[i]);
        }
        items.Add(current.ToString());
        return items;
    }
}
