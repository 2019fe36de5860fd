using System.Globalization;
using System.Text;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// qemu-io's output formats (print_report, cvtstr, timestr, dump_buffer), reproduced so that
/// scripts and test expectations written for qemu-io read our output unchanged; only the
/// measured numbers differ.
/// </summary>
internal static class IoReport
{
    /// <summary>
    /// The two report lines of a finished request ("wrote 65536/65536 bytes at offset 0" and
    /// "64 KiB, 1 ops; 00.00 sec (...)"), or the one comma-separated line with <c>-C</c>.
    /// </summary>
    public static string Format(string op, TimeSpan elapsed, long offset, long count, long total, int ops, bool machine)
    {
        // A zero duration would print "inf"; one tick is as honest and stays a number.
        double seconds = Math.Max(elapsed.TotalSeconds, 1e-7);
        var inv = CultureInfo.InvariantCulture;
        if (machine)
            return string.Create(inv, $"{total},{ops},{Time(elapsed, verbose: true)},{total / seconds:F3},{ops / seconds:F3}\n");
        return string.Create(inv,
            $"{op} {total}/{count} bytes at offset {offset}\n{Bytes(total)}, {ops} ops; {Time(elapsed, verbose: false)} ({Bytes(total / seconds)}/sec and {ops / seconds:F4} ops/sec)\n");
    }

    /// <summary>qemu's cvtstr: "%.3f" in the largest binary unit not above the value, ".000" dropped.</summary>
    public static string Bytes(double value)
    {
        string[] units = [" EiB", " PiB", " TiB", " GiB", " MiB", " KiB"];
        for (int i = 0; i < units.Length; i++)
        {
            double scale = Math.Pow(1024, units.Length - i);
            if (value >= scale) return Trim((value / scale).ToString("F3", CultureInfo.InvariantCulture), units[i]);
        }
        return Trim(value.ToString("F6", CultureInfo.InvariantCulture), " bytes");
    }

    // cvtstr cuts the number at its first ".000" and appends the unit there.
    private static string Trim(string number, string suffix)
    {
        int trim = number.IndexOf(".000", StringComparison.Ordinal);
        return (trim >= 0 ? number[..trim] : number) + suffix;
    }

    /// <summary>qemu's timestr: "SS.ss sec" below a second, else (and always with -C) "H:MM:SS.ss".</summary>
    public static string Time(TimeSpan elapsed, bool verbose)
    {
        long wholeSeconds = (long)Math.Floor(elapsed.TotalSeconds);
        double fraction = elapsed.TotalSeconds - wholeSeconds;
        var inv = CultureInfo.InvariantCulture;
        if (verbose || wholeSeconds != 0)
        {
            long hours = wholeSeconds / 3600, minutes = wholeSeconds / 60 % 60;
            double secs = wholeSeconds % 60 + fraction;
            return string.Create(inv, $"{hours}:{minutes:D2}:{secs.ToString("00.00", inv)}");
        }
        return fraction.ToString("00.00", inv) + " sec";
    }

    /// <summary>qemu-io's <c>read -v</c> hex dump: 16 bytes a line, letters and digits shown, anything else as '.'.</summary>
    public static string Dump(ReadOnlySpan<byte> data, long offset)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < data.Length; i += 16)
        {
            var line = data.Slice(i, Math.Min(16, data.Length - i));
            sb.Append((offset + i).ToString("x8", CultureInfo.InvariantCulture)).Append(":  ");
            foreach (byte b in line) sb.Append(b.ToString("x2", CultureInfo.InvariantCulture)).Append(' ');
            sb.Append(' ');
            foreach (byte b in line) sb.Append(char.IsAsciiLetterOrDigit((char)b) ? (char)b : '.');
            sb.Append('\n');
        }
        return sb.ToString();
    }
}
