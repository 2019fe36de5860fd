using System.Globalization;
using System.Text;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Format;

namespace Qcow2Actors.Cli.Commands;

/// <summary>How a <c>-o</c> value is parsed and printed (QEMU's QemuOptType).</summary>
internal enum CreateOptionType
{
    /// <summary>Kept as typed; printed with commas doubled.</summary>
    String,
    /// <summary>A <see cref="QemuSize"/>; printed as bytes.</summary>
    Size,
    /// <summary>An unsigned integer (decimal, 0x hex or 0 octal); printed in decimal.</summary>
    Number,
    /// <summary>on/off (and QEMU's yes/no/true/false/y/n); printed as typed.</summary>
    Bool,
}

/// <summary>One option qemu-img create knows for a format, with its default (null: printed only when given).</summary>
internal sealed record CreateOptionDescriptor(string Name, CreateOptionType Type, string? Default, string Help);

/// <summary>
/// The merged <c>-o</c> options of one new image — <c>q2a create</c>'s and the target of
/// <c>q2a convert -O qcow2</c> — parsed as qemu-img parses them: several <c>-o</c> joined with
/// commas, ",," a literal comma, "key" alone meaning key=on ("nokey" key=off for booleans), the
/// last value of a key winning. Typed values (sizes, numbers, booleans) are checked here, before
/// create's "Formatting" line, as qemu-img does; values with a fixed set (compat,
/// compression_type, preallocation) are checked after it, by <see cref="ToQcow2Options"/>.
/// </summary>
internal sealed class CreateOptions
{
    // Descriptor order is QEMU 7.2's print order for the Formatting line.
    // The host file's options, which qemu-img accepts for every format and prints last; q2a
    // accepts them and ignores them (nocow is a btrfs attribute, the hint an XFS one).
    private static readonly CreateOptionDescriptor[] FileDescriptors =
    [
        new("nocow", CreateOptionType.Bool, null, "Turn off copy-on-write (valid only on btrfs)"),
        new("extent_size_hint", CreateOptionType.Size, null, "Extent size hint for the image file, 0 to disable"),
    ];

    private static readonly CreateOptionDescriptor[] Qcow2Descriptors =
    [
        new("cluster_size", CreateOptionType.Size, "65536", "qcow2 cluster size"),
        new("extended_l2", CreateOptionType.Bool, "off", "Extended L2 tables"),
        new("preallocation", CreateOptionType.String, null, "Preallocation mode (allowed values: off, metadata, falloc, full)"),
        new("compression_type", CreateOptionType.String, "zlib", "Compression method used for image cluster compression"),
        new("size", CreateOptionType.Size, null, "Virtual disk size"),
        new("compat", CreateOptionType.String, null, "Compatibility level (v2 [0.10] or v3 [1.1])"),
        new("backing_file", CreateOptionType.String, null, "File name of a base image"),
        new("backing_fmt", CreateOptionType.String, null, "Image format of the base image"),
        new("data_file", CreateOptionType.String, null, "File name of an external data file"),
        new("data_file_raw", CreateOptionType.Bool, null, "The external data file must stay valid as a raw image"),
        new("lazy_refcounts", CreateOptionType.Bool, "off", "Postpone refcount updates"),
        new("refcount_bits", CreateOptionType.Number, "16", "Width of a reference count entry in bits"),
        .. FileDescriptors,
    ];

    private static readonly CreateOptionDescriptor[] RawDescriptors =
    [
        new("size", CreateOptionType.Size, null, "Virtual disk size"),
        new("preallocation", CreateOptionType.String, null, "Preallocation mode (allowed values: off, falloc, full)"),
        .. FileDescriptors,
    ];

    private readonly CreateOptionDescriptor[] _descriptors;
    private readonly Dictionary<string, (string Text, ulong? Number)> _values = new(StringComparer.Ordinal);

    private CreateOptions(string format, CreateOptionDescriptor[] descriptors)
    {
        Format = format;
        _descriptors = descriptors;
    }

    /// <summary>The image format ("qcow2" or "raw").</summary>
    public string Format { get; }

    /// <summary>True when the user asked for the option list (<c>-o help</c> or <c>-o ?</c>).</summary>
    public bool HelpRequested { get; private set; }

    /// <summary>The options a format accepts, or null for a format q2a cannot create.</summary>
    public static IReadOnlyList<CreateOptionDescriptor>? DescriptorsFor(string format) => format switch
    {
        "qcow2" => Qcow2Descriptors,
        "raw" => RawDescriptors,
        _ => null,
    };

    /// <summary>
    /// Parses every <c>-o</c> argument for <paramref name="format"/>; errors name
    /// <paramref name="imagePath"/> as qemu-img create does ("IMG: Invalid parameter 'x'"), or
    /// nothing when it is null, as qemu-img convert does ("Invalid parameter 'x'").
    /// </summary>
    /// <exception cref="CliException">An empty or badly terminated list, an unknown key, or a typed value that does not parse.</exception>
    public static CreateOptions Parse(string format, IEnumerable<string> optionArgs, string? imagePath)
    {
        string prefix = imagePath is null ? "" : $"{imagePath}: ";
        var descriptors = format switch
        {
            "qcow2" => Qcow2Descriptors,
            "raw" => RawDescriptors,
            _ => throw new CliException($"Unknown file format '{format}'"),
        };
        var options = new CreateOptions(format, descriptors);
        foreach (var arg in optionArgs)
        {
            if (!IsValidOptionList(arg)) throw new CliException($"Invalid option list: {arg}");
            foreach (var item in SplitList(arg))
                options.Add(item, prefix);
        }
        return options;
    }

    /// <summary>The value as typed, or null when the option was not given.</summary>
    public string? Text(string name) => _values.TryGetValue(name, out var v) ? v.Text : null;

    /// <summary>A parsed size or number, or null when the option was not given.</summary>
    public ulong? Number(string name) => _values.TryGetValue(name, out var v) ? v.Number : null;

    /// <summary>A parsed boolean, or null when the option was not given.</summary>
    public bool? Bool(string name) => _values.TryGetValue(name, out var v) ? ParseBool(v.Text) : null;

    /// <summary>Sets an option from the command line proper (size, -b, -F), which override <c>-o</c>.</summary>
    public void Set(string name, string text, ulong? number = null) => _values[name] = (text, number);

    /// <summary>
    /// The option part of qemu-img's "Formatting" line: every option that was given or has a
    /// default, in QEMU's order; sizes and numbers as parsed, other values as typed.
    /// </summary>
    public string Describe()
    {
        var sb = new StringBuilder();
        foreach (var d in _descriptors)
        {
            string? value;
            if (_values.TryGetValue(d.Name, out var v))
                value = v.Number is { } n ? n.ToString(CultureInfo.InvariantCulture) : v.Text;
            else
                value = d.Default;
            if (value is null) continue;
            if (d.Type == CreateOptionType.String) value = value.Replace(",", ",,", StringComparison.Ordinal);
            sb.Append(' ').Append(d.Name).Append('=').Append(value);
        }
        return sb.ToString();
    }

    /// <summary>qemu-img's "Supported options:" listing for this format.</summary>
    public string HelpText()
    {
        var sb = new StringBuilder("Supported options:\n");
        foreach (var d in _descriptors.OrderBy(d => d.Name, StringComparer.Ordinal))
        {
            string type = d.Type switch
            {
                CreateOptionType.Size => "size",
                CreateOptionType.Number => "num",
                CreateOptionType.Bool => "bool (on/off)",
                _ => "str",
            };
            sb.Append($"  {d.Name}=<{type}>".PadRight(24)).Append(" - ").Append(d.Help).Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>QEMU's on/off spellings; null for anything else.</summary>
    public static bool? ParseBool(string text) => text switch
    {
        "on" or "yes" or "true" or "y" => true,
        "off" or "no" or "false" or "n" => false,
        _ => null,
    };

    // qemu-img's is_valid_option_list: not empty, no leading comma, and trailing commas only
    // in escaped pairs (an odd one would be an empty last item).
    private static bool IsValidOptionList(string arg)
    {
        if (arg.Length == 0 || arg[0] == ',') return false;
        int trailing = arg.Length - arg.TrimEnd(',').Length;
        return trailing % 2 == 0;
    }

    private static IEnumerable<string> SplitList(string arg)
    {
        var item = new StringBuilder();
        for (int i = 0; i < arg.Length; i++)
        {
            if (arg[i] != ',') { item.Append(arg[i]); continue; }
            if (i + 1 < arg.Length && arg[i + 1] == ',') { item.Append(','); i++; continue; }
            yield return item.ToString();
            item.Clear();
        }
        yield return item.ToString();
    }

    private void Add(string item, string prefix)
    {
        if (item is "help" or "?") { HelpRequested = true; return; }
        int eq = item.IndexOf('=', StringComparison.Ordinal);
        string key, text;
        if (eq >= 0) { key = item[..eq]; text = item[(eq + 1)..]; }
        else if (item.StartsWith("no", StringComparison.Ordinal))
        {
            // QEMU strips "no" from any bare key, known or not: "nocow" is cow=off, an unknown key.
            key = item[2..];
            text = "off";
        }
        else { key = item; text = "on"; }

        if (key == "encryption" || key.StartsWith("encrypt.", StringComparison.Ordinal))
            throw new CliException($"{prefix}encryption is not supported by q2a");
        var d = Find(key) ?? throw new CliException($"{prefix}Invalid parameter '{key}'");
        ulong? number = null;
        switch (d.Type)
        {
            case CreateOptionType.Size:
                if (QemuSize.TryParse(text, out var size) != QemuSizeError.None)
                    throw new CliException($"{prefix}Parameter '{key}' expects a non-negative number below 2^64 "
                        + "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta- and exabytes, respectively.");
                number = size;
                break;
            case CreateOptionType.Number:
                number = ParseNumber(text) ?? throw new CliException($"{prefix}Parameter '{key}' expects a number");
                break;
            case CreateOptionType.Bool:
                if (ParseBool(text) is null) throw new CliException($"{prefix}Parameter '{key}' expects 'on' or 'off'");
                break;
        }
        _values[key] = (text, number);
    }

    /// <summary>
    /// Maps the options onto the qcow2 creator's options for an image of <paramref name="size"/>
    /// bytes (a "size" option is the caller's business); fixed-set values are checked here.
    /// Errors start with <paramref name="errorPrefix"/>: "IMG: " for create, "IMG: error while
    /// converting qcow2: " for convert, as qemu-img words them.
    /// </summary>
    /// <exception cref="CliException">compat, compression_type or preallocation has a value q2a does not know, or data_file_raw lacks data_file.</exception>
    public Qcow2CreateOptions ToQcow2Options(long size, string errorPrefix)
    {
        int version = Text("compat") switch
        {
            null or "1.1" or "v3" => 3,
            "0.10" or "v2" => 2,
            var other => throw new CliException($"{errorPrefix}Parameter 'version' does not accept value '{other}'"),
        };
        var compression = Text("compression_type") switch
        {
            null or "zlib" => CompressionType.Zlib,
            "zstd" => CompressionType.Zstd,
            var other => throw new CliException($"{errorPrefix}Parameter 'compression-type' does not accept value '{other}'"),
        };
        var preallocation = Text("preallocation") switch
        {
            null or "off" => Preallocation.Off,
            // falloc and full are metadata preallocation plus host space (HostPreallocation).
            "metadata" or "falloc" or "full" => Preallocation.Metadata,
            var other => throw new CliException($"{errorPrefix}Parameter 'preallocation' does not accept value '{other}'"),
        };
        if (Bool("data_file_raw") == true && Text("data_file") is null)
            throw new CliException($"{errorPrefix}data-file-raw requires data-file");
        return new Qcow2CreateOptions
        {
            Size = size,
            // Out-of-range widths clamp to a value the creator refuses with QEMU's own message.
            ClusterSize = (int)Math.Min(Number("cluster_size") ?? 65536, int.MaxValue),
            RefcountBits = (int)Math.Min(Number("refcount_bits") ?? 16, int.MaxValue),
            Version = version,
            ExtendedL2 = Bool("extended_l2") ?? false,
            LazyRefcounts = Bool("lazy_refcounts") ?? false,
            CompressionType = compression,
            BackingFile = Text("backing_file"),
            BackingFormat = Text("backing_fmt"),
            DataFile = Text("data_file"),
            DataFileRaw = Bool("data_file_raw") ?? false,
            Preallocation = preallocation,
        };
    }

    /// <summary>
    /// What a qcow2 image's host file gets beyond metadata preallocation: "falloc" (space reserved
    /// with fallocate, reading as zeros) or "full" (every byte written), or null for neither.
    /// </summary>
    public string? HostPreallocation => Text("preallocation") is "falloc" or "full" ? Text("preallocation") : null;

    private CreateOptionDescriptor? Find(string key) => Array.Find(_descriptors, d => d.Name == key);

    // strtoull with base 0, as QEMU's QEMU_OPT_NUMBER: 0x hex, leading-0 octal, else decimal.
    private static ulong? ParseNumber(string text)
    {
        try
        {
            if (text.StartsWith("0x", StringComparison.OrdinalIgnoreCase) && text.Length > 2)
                return ulong.Parse(text.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
            if (text.Length > 1 && text[0] == '0')
                return Convert.ToUInt64(text[1..], 8);
            return ulong.Parse(text, NumberStyles.None, CultureInfo.InvariantCulture);
        }
        catch (Exception ex) when (ex is FormatException or OverflowException or ArgumentException)
        {
            return null;
        }
    }
}
