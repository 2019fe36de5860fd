using System.Globalization;
using System.Text;

namespace Qcow2Actors.Engine.Info;

/// <summary>
/// A JSON object whose members come out in the order qemu-img prints them. QEMU keeps
/// objects in a hash table (QDict, 512 buckets, TDB hash) and walks it bucket by bucket,
/// newest entry first within a bucket; reproducing that makes our output byte-identical
/// to <c>qemu-img --output=json</c> rather than merely equivalent.
/// </summary>
public sealed class QemuJsonObject
{
    private readonly List<(string Key, object Value)> _members = [];

    /// <summary>Adds a member: a string, bool, integer, <see cref="QemuJsonObject"/> or list of those.</summary>
    public QemuJsonObject Add(string key, object value)
    {
        _members.Add((key, value));
        return this;
    }

    /// <summary>The members in QEMU's iteration order.</summary>
    public IEnumerable<(string Key, object Value)> Members
    {
        get
        {
            // An index sort rather than LINQ's OrderBy over value tuples, whose generic instances
            // were JIT-compiled on every `q2a info` run (about 60 methods of its start-up).
            var order = new int[_members.Count];
            var buckets = new uint[_members.Count];
            for (var i = 0; i < order.Length; i++)
            {
                order[i] = i;
                buckets[i] = Bucket(_members[i].Key);
            }
            Array.Sort(order, (a, b) => buckets[a] != buckets[b] ? buckets[a].CompareTo(buckets[b]) : b.CompareTo(a));
            var result = new (string Key, object Value)[order.Length];
            for (var i = 0; i < order.Length; i++) result[i] = _members[order[i]];
            return result;
        }
    }

    private static uint Bucket(string key)
    {
        var bytes = Encoding.UTF8.GetBytes(key);
        var value = unchecked(0x238F13AFu * (uint)bytes.Length);
        for (var i = 0; i < bytes.Length; i++)
            value = unchecked(value + ((uint)bytes[i] << (i * 5 % 24)));
        return unchecked(1103515243u * value + 12345u) % 512;
    }

    /// <summary>Pretty-prints like QEMU's JSON writer (4-space indent, no trailing newline).</summary>
    public string ToJson()
    {
        var sb = new StringBuilder();
        Write(sb, this, 0);
        return sb.ToString();
    }

    /// <summary>Prints like qemu-img's human "Format specific information" dump (keys with spaces).</summary>
    public string ToHuman(int indentation)
    {
        var sb = new StringBuilder();
        DumpDict(sb, this, indentation);
        return sb.ToString();
    }

    // Indentation comes from a constant, not StringBuilder.Append(' ', n): that overload's fill has no precompiled
    // code here and was JIT-compiled on every `q2a info` run (~1 ms of its start-up, bench/results/info-startup-2026-12-03.md).
    private const string Spaces = "                                ";

    private static StringBuilder AppendSpaces(StringBuilder sb, int count)
    {
        for (; count > Spaces.Length; count -= Spaces.Length) sb.Append(Spaces);
        return sb.Append(Spaces, 0, count);
    }

    private static void Write(StringBuilder sb, object value, int indent)
    {
        switch (value)
        {
            case QemuJsonObject o:
            {
                sb.Append('{');
                var first = true;
                foreach (var (k, v) in o.Members)
                {
                    AppendSpaces(sb.Append(first ? "" : ",").Append('\n'), 4 * (indent + 1));
                    first = false;
                    sb.Append(Quote(k)).Append(": ");
                    Write(sb, v, indent + 1);
                }
                AppendSpaces(sb.Append('\n'), 4 * indent).Append('}');
                break;
            }
            case System.Collections.IEnumerable list and not string:
            {
                sb.Append('[');
                var first = true;
                foreach (var v in list)
                {
                    AppendSpaces(sb.Append(first ? "" : ",").Append('\n'), 4 * (indent + 1));
                    first = false;
                    Write(sb, v, indent + 1);
                }
                AppendSpaces(sb.Append('\n'), 4 * indent).Append(']');
                break;
            }
            default:
                sb.Append(Scalar(value, json: true));
                break;
        }
    }

    private static string Scalar(object value, bool json) => value switch
    {
        string s => json ? Quote(s) : s,
        bool b => b ? "true" : "false",
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };

    private static bool IsComposite(object v) => v is QemuJsonObject || (v is System.Collections.IEnumerable && v is not string);

    private static void DumpDict(StringBuilder sb, QemuJsonObject o, int indentation)
    {
        foreach (var (k, v) in o.Members)
        {
            AppendSpaces(sb, indentation * 4).Append(k.Replace('-', ' ')).Append(':').Append(IsComposite(v) ? '\n' : ' ');
            DumpValue(sb, v, indentation + 1);
        }
    }

    private static void DumpValue(StringBuilder sb, object v, int indentation)
    {
        switch (v)
        {
            case QemuJsonObject o:
                DumpDict(sb, o, indentation);
                break;
            case System.Collections.IEnumerable list and not string:
                var i = 0;
                foreach (var item in list)
                {
                    AppendSpaces(sb, indentation * 4).Append('[').Append(i++).Append("]:").Append(IsComposite(item) ? '\n' : ' ');
                    DumpValue(sb, item, indentation + 1);
                }
                break;
            default:
                sb.Append(Scalar(v, json: false)).Append('\n');
                break;
        }
    }

    private static string Quote(string s)
    {
        var sb = new StringBuilder("\"");
        foreach (var c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c < 0x20 || c >= 0x7F) sb.Append("\\u").Append(((int)c).ToString("X4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        return sb.Append('"').ToString();
    }
}
