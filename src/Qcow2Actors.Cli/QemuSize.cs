using System.Globalization;

namespace Qcow2Actors.Cli;

/// <summary>Why <see cref="QemuSize.TryParse"/> refused a number (QEMU's -EINVAL and -ERANGE).</summary>
internal enum QemuSizeError
{
    /// <summary>Parsed.</summary>
    None,
    /// <summary>Not a number, a fraction without a scale, a negative sign, or junk after the suffix.</summary>
    Invalid,
    /// <summary>Does not fit in 64 bits.</summary>
    Range,
}

/// <summary>
/// QEMU's <c>qemu_strtosz</c>, the size syntax of qemu-img and qemu-io: a decimal (or 0x hex)
/// number, optionally with a fraction, and one optional binary suffix B, K, M, G, T, P or E
/// (either case). A plain number is bytes; a fraction needs a suffix other than B ("1.5k" is
/// 1536, "1.5" is refused), rounded half up; hex takes no fraction. Users who pass sizes
/// to both tools expect the very same numbers from both, hence the faithful copy.
/// </summary>
internal static class QemuSize
{
    /// <summary>Parses <paramref name="text"/> entirely; returns the reason when it is not a size.</summary>
    public static QemuSizeError TryParse(string text, out ulong value)
    {
        value = 0;
        int i = 0;
        // strtoull skips leading white space and takes one sign; QEMU then refuses any '-'.
        while (i < text.Length && char.IsWhiteSpace(text[i])) i++;
        if (i < text.Length && (text[i] == '+' || text[i] == '-'))
        {
            if (text[i] == '-') return QemuSizeError.Invalid;
            i++;
        }
        int digitsStart = i;
        bool hex = false;
        UInt128 integral = 0;
        if (i + 1 < text.Length && text[i] == '0' && (text[i + 1] == 'x' || text[i + 1] == 'X'))
        {
            int h = i + 2;
            while (h < text.Length && Uri.IsHexDigit(text[h]))
            {
                integral = integral * 16 + (UInt128)HexValue(text[h]);
                if (integral > ulong.MaxValue) return QemuSizeError.Range;
                h++;
            }
            if (h == i + 2) return QemuSizeError.Invalid; // "0x" alone
            if (h < text.Length && text[h] == '.') return QemuSizeError.Invalid;
            hex = true;
            i = h;
        }
        else
        {
            while (i < text.Length && char.IsAsciiDigit(text[i]))
            {
                integral = integral * 10 + (UInt128)(text[i] - '0');
                if (integral > ulong.MaxValue) return QemuSizeError.Range;
                i++;
            }
            if (i == digitsStart) return QemuSizeError.Invalid;
        }

        // The fraction as 64.64 fixed point, like QEMU, so rounding matches to the byte.
        UInt128 fraction = 0;
        if (!hex && i < text.Length && text[i] == '.')
        {
            int f = i + 1;
            while (f < text.Length && char.IsAsciiDigit(text[f])) f++;
            if (f < text.Length && (text[f] == 'e' || text[f] == 'E') && f + 1 < text.Length
                && (char.IsAsciiDigit(text[f + 1]) || text[f + 1] is '+' or '-'))
                return QemuSizeError.Invalid; // an exponent: QEMU refuses the whole input
            double d = f == i + 1 ? 0 : double.Parse("0" + text[i..f], NumberStyles.Float, CultureInfo.InvariantCulture);
            fraction = (UInt128)(ulong)Math.Min(d * 18446744073709551616.0, ulong.MaxValue);
            i = f;
        }

        ulong multiplier = 1;
        if (i < text.Length)
        {
            multiplier = Multiplier(text[i]);
            if (multiplier == 0) return QemuSizeError.Invalid;
            i++;
        }
        if (i != text.Length) return QemuSizeError.Invalid;
        if (multiplier == 1)
        {
            if (fraction != 0) return QemuSizeError.Invalid;
            value = (ulong)integral;
            return QemuSizeError.None;
        }
        UInt128 whole = integral * multiplier;
        UInt128 part = fraction * multiplier; // 64.64 fixed point
        UInt128 total = whole + (part >> 64) + ((part >> 63) & 1);
        if (total > ulong.MaxValue) return QemuSizeError.Range;
        value = (ulong)total;
        return QemuSizeError.None;
    }

    private static int HexValue(char c) => c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;

    private static ulong Multiplier(char suffix) => char.ToUpperInvariant(suffix) switch
    {
        'B' => 1,
        'K' => 1UL << 10,
        'M' => 1UL << 20,
        'G' => 1UL << 30,
        'T' => 1UL << 40,
        'P' => 1UL << 50,
        'E' => 1UL << 60,
        _ => 0,
    };
}
