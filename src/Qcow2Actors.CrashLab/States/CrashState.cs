using System.Globalization;
using System.Text;

namespace Qcow2Actors.CrashLab.States;

/// <summary>
/// One crash state: the disk as the power cut at <see cref="Point"/> may have left it. <see cref="Id"/> rebuilds it
/// from the same log and sector size (<see cref="CrashStateSpace.Resolve"/>).
/// </summary>
public sealed class CrashState
{
    internal CrashState(string id, CrashPoint point, IReadOnlyList<CrashWriteChoice> choices)
    {
        Id = id;
        Point = point;
        Choices = choices;
    }

    /// <summary>Compact id: <c>p{point}x{index}</c> (exhaustive numbering) or <c>p{point}r{seed}</c> (sampled).</summary>
    public string Id { get; }

    /// <summary>Where the power was cut.</summary>
    public CrashPoint Point { get; }

    /// <summary>Flushes completed before the cut.</summary>
    public int Epoch => Point.Epoch;

    /// <summary>The fate of every volatile write at the point, in issue order.</summary>
    public IReadOnlyList<CrashWriteChoice> Choices { get; }

    /// <summary>Ids of the volatile writes that reached the disk whole.</summary>
    public IEnumerable<long> Kept => Choices.Where(c => c.Fate == CrashWriteFate.Kept).Select(c => c.Operation.Id);

    /// <summary>Ids of the volatile writes that were lost.</summary>
    public IEnumerable<long> Dropped => Choices.Where(c => c.Fate == CrashWriteFate.Dropped).Select(c => c.Operation.Id);

    /// <summary>The volatile writes that were torn.</summary>
    public IEnumerable<CrashWriteChoice> Torn => Choices.Where(c => c.Fate == CrashWriteFate.Torn);

    /// <summary>Every byte range that reaches the disk, in the order it is applied over the base: the durable
    /// operations and the kept parts of the volatile ones, in issue order.</summary>
    public IEnumerable<(CrashLogOperation Operation, long Offset, long Length)> Applied()
    {
        var kept = Choices.Where(c => c.Fate != CrashWriteFate.Dropped)
            .SelectMany(c => c.KeptRanges.Select(r => (c.Operation, r.Offset, r.Length)));
        var durable = Point.Durable.Select(o => (Operation: o, o.Offset, o.Length));
        return durable.Concat(kept).OrderBy(a => a.Operation.BeginIndex).ThenBy(a => a.Offset);
    }

    /// <summary>One line: epoch, and which volatile writes were kept, dropped and torn.</summary>
    public string Describe()
    {
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"epoch {Epoch}, {Point.Durable.Count} durable");
        Append(text, "kept", Kept.Select(Name));
        Append(text, "dropped", Dropped.Select(Name));
        Append(text, "torn", Torn.Select(t => string.Create(CultureInfo.InvariantCulture, $"#{t.Operation.Id} ({t.SectorsKept}/{t.Sectors} sectors)")));
        return text.ToString();

        static string Name(long id) => string.Create(CultureInfo.InvariantCulture, $"#{id}");
    }

    private static void Append(StringBuilder text, string label, IEnumerable<string> items)
    {
        var list = items.ToList();
        if (list.Count == 0)
            return;
        const int Shown = 12;
        text.Append(CultureInfo.InvariantCulture, $"; {label} {string.Join(' ', list.Take(Shown))}");
        if (list.Count > Shown)
            text.Append(CultureInfo.InvariantCulture, $" (+{list.Count - Shown} more)");
    }
}
