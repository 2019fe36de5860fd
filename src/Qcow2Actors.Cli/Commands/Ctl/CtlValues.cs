using System.Globalization;

namespace Qcow2Actors.Cli.Commands.Ctl;

/// <summary>
/// Command-line values ctl converts before sending: sizes in qemu's syntax (<see cref="QemuSize"/>: 1G, 512M,
/// 0x1000) and plain counts. A bad one is a <see cref="CtlUsageException"/> naming the option.
/// </summary>
internal static class CtlValues
{
    /// <summary><paramref name="text"/> as bytes; <paramref name="what"/> names the option or argument.</summary>
    public static long Size(string text, string what) => QemuSize.TryParse(text, out var value) switch
    {
        QemuSizeError.None when value <= long.MaxValue => (long)value,
        QemuSizeError.Invalid => throw new CtlUsageException($"{what}: invalid size '{text}' (bytes, or a number with a k, M, G, T, P or E suffix)"),
        _ => throw new CtlUsageException($"{what}: size '{text}' is too large"),
    };

    /// <summary><paramref name="text"/> as bytes, or null when absent.</summary>
    public static long? OptionalSize(string? text, string what) => text is null ? null : Size(text, what);

    /// <summary><paramref name="text"/> as a non-negative count, or null when absent.</summary>
    public static long? OptionalCount(string? text, string what)
    {
        if (text is null) return null;
        if (!long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value))
            throw new CtlUsageException($"{what}: '{text}' is not a non-negative whole number");
        return value;
    }

    /// <summary><paramref name="text"/> as a non-negative int, or null when absent.</summary>
    public static int? OptionalInt(string? text, string what)
    {
        var value = OptionalCount(text, what);
        if (value > int.MaxValue) throw new CtlUsageException($"{what}: '{text}' is too large");
        return (int?)value;
    }
}
