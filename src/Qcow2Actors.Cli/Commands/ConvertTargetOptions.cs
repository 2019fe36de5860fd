using System.Globalization;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Format;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// The qcow2 creation options <c>q2a convert -O qcow2 -o ...</c> accepts, parsed as qemu-img does
/// (comma-separated key=value pairs, repeatable <c>-o</c>, later values win). A deliberately small
/// parser of convert's own, to be folded into the create verb's <c>-o</c> parser (CreateOptions)
/// once both are on one branch.
/// </summary>
internal static class ConvertTargetOptions
{
    private static readonly string[] Known =
    [
        "size", "compat", "backing_file", "backing_fmt", "data_file", "data_file_raw", "encryption", "cluster_size",
        "preallocation", "lazy_refcounts", "refcount_bits", "compression_type", "extended_l2", "extent_size_hint",
        "encrypt.format",
    ];

    /// <summary>Splits every <c>-o</c> argument into key/value pairs; a bare key means "on" (qemu's implied value).</summary>
    public static Dictionary<string, string> Parse(IEnumerable<string> args)
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var arg in args)
        {
            foreach (var part in SplitCommas(arg))
            {
                if (part.Length == 0) continue;
                int eq = part.IndexOf('=', StringComparison.Ordinal);
                string key = eq < 0 ? part : part[..eq];
                string value = eq < 0 ? "on" : part[(eq + 1)..];
                if (!Known.Contains(key, StringComparer.Ordinal))
                    throw new ArgumentException($"Invalid parameter '{key}'");
                // qemu checks a value's type while parsing, before the target is named in errors.
                switch (key)
                {
                    case "lazy_refcounts" or "extended_l2" or "data_file_raw": ParseBool(key, value); break;
                    case "cluster_size" or "extent_size_hint" or "size": ParseSize(key, value); break;
                    case "refcount_bits": ParseNumber(key, value); break;
                }
                values[key] = value;
            }
        }
        return values;
    }

    // qemu's option syntax: ",," is a literal comma inside a value.
    private static IEnumerable<string> SplitCommas(string arg)
    {
        var current = new System.Text.StringBuilder();
        for (int i = 0; i < arg.Length; i++)
        {
            if (arg[i] == ',')
            {
                if (i + 1 < arg.Length && arg[i + 1] == ',') { current.Append(','); i++; continue; }
                yield return current.ToString();
                current.Clear();
                continue;
            }
            current.Append(arg[i]);
        }
        yield return current.ToString();
    }

    /// <summary>
    /// Builds the target's creation options: <paramref name="size"/> from the source, <c>-B</c>/<c>-F</c>
    /// (or backing_file/backing_fmt in <c>-o</c>) as the backing file, the rest from <c>-o</c>.
    /// Errors carry qemu-img's wording; the caller prefixes the target's name where qemu-img does.
    /// </summary>
    public static Qcow2CreateOptions ToCreateOptions(long size, IReadOnlyDictionary<string, string> o, string? backing, string? backingFormat)
    {
        var options = new Qcow2CreateOptions { Size = size };
        foreach (var (key, value) in o)
        {
            options = key switch
            {
                "size" => options, // the source decides the size, as in qemu-img convert
                "compat" => options with { Version = value switch
                {
                    "0.10" or "v2" => 2,
                    "1.1" or "v3" => 3,
                    _ => throw new ArgumentException($"Parameter 'version' does not accept value '{value}'"),
                } },
                "cluster_size" => options with { ClusterSize = checked((int)ParseSize(key, value)) },
                "refcount_bits" => options with { RefcountBits = checked((int)ParseNumber(key, value)) },
                "lazy_refcounts" => options with { LazyRefcounts = ParseBool(key, value) },
                "extended_l2" => options with { ExtendedL2 = ParseBool(key, value) },
                "compression_type" => options with { CompressionType = value switch
                {
                    "zlib" => CompressionType.Zlib,
                    "zstd" => CompressionType.Zstd,
                    _ => throw new ArgumentException($"Parameter 'compression-type' does not accept value '{value}'"),
                } },
                "preallocation" => options with { Preallocation = value switch
                {
                    "off" => Preallocation.Off,
                    "metadata" => Preallocation.Metadata,
                    _ => throw new NotSupportedException($"Parameter 'preallocation' does not accept value '{value}' (q2a supports off and metadata)"),
                } },
                "backing_file" => options with { BackingFile = value },
                "backing_fmt" => options with { BackingFormat = value },
                "data_file" => options with { DataFile = value },
                "data_file_raw" => options with { DataFileRaw = ParseBool(key, value) },
                "extent_size_hint" => options,
                _ => throw new NotSupportedException($"option '{key}' is not supported by q2a"),
            };
        }
        if (backing is not null) options = options with { BackingFile = backing };
        if (backingFormat is not null) options = options with { BackingFormat = backingFormat };
        return options;
    }

    private static bool ParseBool(string key, string value) => value switch
    {
        "on" or "yes" or "true" => true,
        "off" or "no" or "false" => false,
        _ => throw new ArgumentException($"Parameter '{key}' expects 'on' or 'off'"),
    };

    private static ulong ParseNumber(string key, string value) =>
        ulong.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n
            : throw new ArgumentException($"Parameter '{key}' expects a non-negative number below 2^64");

    /// <summary>qemu's size syntax: a number with an optional k/M/G/T/P/E suffix (binary), or a b suffix.</summary>
    internal static ulong ParseSize(string key, string value)
    {
        string digits = value;
        int shift = 0;
        if (value.Length > 0 && char.IsLetter(value[^1]))
        {
            shift = char.ToUpperInvariant(value[^1]) switch
            {
                'B' => 0, 'K' => 10, 'M' => 20, 'G' => 30, 'T' => 40, 'P' => 50, 'E' => 60,
                _ => throw new ArgumentException($"Parameter '{key}' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively."),
            };
            digits = value[..^1];
        }
        if (!ulong.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out var n) || (shift > 0 && n > ulong.MaxValue >> shift))
            throw new ArgumentException($"Parameter '{key}' expects a non-negative number below 2^64");
        return n << shift;
    }
}
