using System.Globalization;

namespace Qcow2Actors.Cli;

/// <summary>
/// The stop and reload signals this process was started with set to "ignore". A disposition of
/// SIG_IGN survives exec and .NET leaves such a signal ignored (no handler runs), so `nohup`
/// (SIGHUP) or a background job of a non-interactive shell (SIGINT) silently takes those signals
/// from `serve` and `host`; they say so at start instead of seeming to hang on Ctrl-C.
/// </summary>
internal static class IgnoredSignals
{
    private const int SigHup = 1;
    private const int SigInt = 2;
    private const int SigTerm = 15;

    /// <summary>The names of SIGHUP, SIGINT and SIGTERM among the ignored ones in /proc/self/status; none where it cannot be read.</summary>
    public static IReadOnlyList<string> Inherited()
    {
        try
        {
            return FromStatus(File.ReadAllText("/proc/self/status"));
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return [];
    }

    /// <summary>The same, from the text of a /proc/PID/status file (its "SigIgn:" mask, bit N-1 for signal N).</summary>
    public static IReadOnlyList<string> FromStatus(string status)
    {
        foreach (var line in status.Split('\n'))
        {
            if (!line.StartsWith("SigIgn:", StringComparison.Ordinal)) continue;
            if (!ulong.TryParse(line["SigIgn:".Length..].Trim(), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var mask)) return [];
            var names = new List<string>();
            foreach (var (number, name) in new[] { (SigHup, "SIGHUP"), (SigInt, "SIGINT"), (SigTerm, "SIGTERM") })
                if ((mask & (1UL << (number - 1))) != 0) names.Add(name);
            return names;
        }
        return [];
    }

    /// <summary>One warning line for <paramref name="verb"/> when any of them is ignored; null when none is.</summary>
    public static string? Warning(string verb, IReadOnlyList<string> ignored) =>
        ignored.Count == 0
            ? null
            : $"q2a {verb}: warning: {string.Join(" and ", ignored)} {(ignored.Count == 1 ? "was" : "were")} ignored when this process started "
              + "(inherited, e.g. from nohup or a background job of a script) and will do nothing; "
              + (ignored.Contains("SIGTERM") ? "stop it with SIGKILL only as a last resort (images then need recovery)" : "stop it with SIGTERM");
}
