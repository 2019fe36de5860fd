using System.Globalization;

namespace Qcow2Actors.Cli;

/// <summary>
/// QEMU's <c>size_to_str</c>, the human sizes of qemu-img (<c>virtual size: 1 GiB</c>): the size divided by the
/// largest power of 1024 that leaves it under 1000, printed with C's <c>%0.3g</c> (three significant digits,
/// rounded half to even on the exact binary value, trailing zeros dropped, and an exponent where the rounding
/// reaches 1000: 1023488 bytes are <c>1e+03 KiB</c>), then the binary unit.
/// </summary>
/// <remarks>
/// The digits come from the double's exact mantissa and exponent in integer arithmetic rather than from
/// <c>double.ToString("G3")</c>, which gives the same text but whose first call sets up .NET's floating-point
/// formatting: ~1.3 ms of <c>q2a info</c>'s start-up (bench/results/info-startup-2026-12-03.md). A quotient the
/// integer path does not cover (under 0.1, which no size gives) falls back to that formatting.
/// </remarks>
internal static class QemuSizeText
{
    private static readonly string[] Suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    private const int MantissaBits = 52;
    private const int ExponentBias = 1075; // 1023 + 52: the exponent of the mantissa's last bit

    /// <summary>The text qemu-img prints for <paramref name="value"/> bytes, e.g. <c>1.5 KiB</c>, <c>0.977 KiB</c>, <c>64 MiB</c>.</summary>
    public static string Format(long value)
    {
        // QEMU: frexp(val / (1000.0 / 1024.0), &e); i = (e - 1) / 10; "%0.3g" of (double)val / 2^(10 i).
        var scaled = value / (1000.0 / 1024.0);
        var exponent = scaled == 0 ? 0 : (int)Math.Floor(Math.Log2(scaled)) + 1;
        var i = Math.Max(0, (exponent - 1) / 10);
        var shown = value / (double)(1L << (i * 10));
        return G3(shown) + " " + Suffixes[i] + "B";
    }

    /// <summary>C's <c>%0.3g</c> of a non-negative double below 1000.</summary>
    internal static string G3(double v)
    {
        // Decimals that leave three significant digits, judged on the value before rounding.
        int decimals = v >= 100 ? 0 : v >= 10 ? 1 : v >= 1 ? 2 : v >= 0.1 ? 3 : -1;
        if (v == 0) return "0";
        if (decimals < 0 || v >= 1000 || !double.IsFinite(v)) return DoubleG3(v);
        long bits = BitConverter.DoubleToInt64Bits(v);
        int biased = (int)(bits >> MantissaBits) & 0x7FF;
        ulong mantissa = (ulong)bits & ((1UL << MantissaBits) - 1);
        if (biased != 0) mantissa |= 1UL << MantissaBits;
        int shift = ExponentBias - (biased == 0 ? 1 : biased); // v == mantissa / 2^shift exactly
        ulong scale = decimals switch { 0 => 1, 1 => 10, 2 => 100, _ => 1000 };
        // From 0.1 up to 1000 the shift is 43-56; anything else (not reachable from the checks above) takes the old route.
        if (shift <= 0 || shift >= 64) return DoubleG3(v);
        ulong n = mantissa * scale; // < 2^53 * 1000 < 2^63
        ulong q = n >> shift;
        ulong rest = n & ((1UL << shift) - 1);
        ulong half = 1UL << (shift - 1);
        if (rest > half || (rest == half && (q & 1) == 1)) q++;
        // From 999.5 up, three significant digits make 1000, which %g prints with an exponent (qemu-img says "1e+03 KiB").
        if (decimals == 0 && q == 1000) return "1e+03";
        // q / scale with `decimals` digits, trailing zeros (and a bare point) dropped, as %g does.
        ulong whole = q / scale, fraction = q % scale;
        int digits = decimals;
        while (digits > 0 && fraction % 10 == 0)
        {
            fraction /= 10;
            digits--;
        }
        var text = whole.ToString(CultureInfo.InvariantCulture);
        return digits == 0 ? text : text + "." + fraction.ToString(CultureInfo.InvariantCulture).PadLeft(digits, '0');
    }

    // The general route: .NET's "G3" rounds the exact value half to even, as glibc's printf does, and writes an
    // exponent where %g does, in capitals ("1E+03" for C's "1e+03").
    private static string DoubleG3(double v) =>
        v.ToString("G3", CultureInfo.InvariantCulture).Replace('E', 'e');
}
