using System.Globalization;

namespace Qcow2Actors.Chaos.Workloads;

/// <summary>
/// The line protocol a workload process writes to stdout so a parent that SIGKILLs it knows
/// what it may demand afterwards. Each line is written and flushed before the process moves on:
/// <list type="bullet">
/// <item><c>STARTED &lt;i&gt;</c> before op i is issued (ops after the last STARTED never ran),</item>
/// <item><c>DONE &lt;i&gt;</c> after a write/write-zeroes/discard completed (with FUA it is durable),</item>
/// <item><c>FLUSHED &lt;i&gt;</c> after flush op i completed (everything issued before it is durable).</item>
/// </list>
/// Other lines are ignored, so a child may log freely. A line the kill cut short is never
/// counted: a truncated "FLUSHED 12" must not read as "FLUSHED 1".
/// </summary>
public static class ChaosProtocol
{
    /// <summary>Keyword of the line written before an op is issued.</summary>
    public const string Started = "STARTED";

    /// <summary>Keyword of the line written after a data op completed.</summary>
    public const string Done = "DONE";

    /// <summary>Keyword of the line written after a flush completed.</summary>
    public const string Flushed = "FLUSHED";

    /// <summary>The STARTED line for op <paramref name="index"/>.</summary>
    public static string StartedLine(int index) => Line(Started, index);

    /// <summary>The DONE line for op <paramref name="index"/>.</summary>
    public static string DoneLine(int index) => Line(Done, index);

    /// <summary>The FLUSHED line for op <paramref name="index"/>.</summary>
    public static string FlushedLine(int index) => Line(Flushed, index);

    private static string Line(string keyword, int index) => string.Create(CultureInfo.InvariantCulture, $"{keyword} {index}");
}

/// <summary>What a (possibly killed) workload process reported, parsed from its complete stdout lines.</summary>
public sealed class ChaosLog
{
    private readonly HashSet<int> _done = [];
    private readonly HashSet<int> _flushed = [];

    private ChaosLog()
    {
    }

    /// <summary>Highest op index announced with STARTED; -1 when none.</summary>
    public int LastStarted { get; private set; } = -1;

    /// <summary>Highest flush op index reported FLUSHED; -1 when none.</summary>
    public int LastFlushed { get; private set; } = -1;

    /// <summary>Data ops reported DONE.</summary>
    public IReadOnlySet<int> Done => _done;

    /// <summary>Flush ops reported FLUSHED.</summary>
    public IReadOnlySet<int> Flushed => _flushed;

    /// <summary>Parses protocol lines, skipping anything else.</summary>
    public static ChaosLog Parse(IEnumerable<string> lines)
    {
        ArgumentNullException.ThrowIfNull(lines);
        var log = new ChaosLog();
        foreach (var raw in lines)
        {
            var line = raw.Trim();
            var space = line.IndexOf(' ', StringComparison.Ordinal);
            if (space <= 0) continue;
            if (!int.TryParse(line.AsSpan(space + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var index)) continue;
            switch (line[..space])
            {
                case ChaosProtocol.Started:
                    log.LastStarted = Math.Max(log.LastStarted, index);
                    break;
                case ChaosProtocol.Done:
                    log._done.Add(index);
                    log.LastStarted = Math.Max(log.LastStarted, index);
                    break;
                case ChaosProtocol.Flushed:
                    log._flushed.Add(index);
                    log.LastFlushed = Math.Max(log.LastFlushed, index);
                    log.LastStarted = Math.Max(log.LastStarted, index);
                    break;
            }
        }
        return log;
    }

    /// <inheritdoc />
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"started through #{LastStarted}, last flush #{LastFlushed}, {_done.Count} done");
}
