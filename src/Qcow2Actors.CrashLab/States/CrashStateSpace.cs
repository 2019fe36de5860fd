using System.Globalization;

namespace Qcow2Actors.CrashLab.States;

/// <summary>
/// Every crash state of a recording under the disk contract: when a FLUSH completes, every write, zero or trim whose
/// completion was logged before the flush began is durable; a FUA write is durable once its own completion is
/// logged; anything else issued before the cut may be missing, present, or torn at <see cref="SectorSize"/>.
/// Kept writes land in issue order, so two overlapping volatile writes also cover "the later one was lost".
/// </summary>
public sealed class CrashStateSpace
{
    private CrashStateSpace(CrashLog log, int sectorSize, IReadOnlyList<CrashPoint> points)
    {
        Log = log;
        SectorSize = sectorSize;
        Points = points;
    }

    /// <summary>The recording.</summary>
    public CrashLog Log { get; }

    /// <summary>The unit a write may tear at (512 or 4096).</summary>
    public int SectorSize { get; }

    /// <summary>The distinct crash points, in log order (two cuts with the same durable and volatile writes are one).</summary>
    public IReadOnlyList<CrashPoint> Points { get; }

    /// <summary>Builds the state space of <paramref name="log"/> for writes tearing at <paramref name="sectorSize"/>.</summary>
    public static CrashStateSpace Build(CrashLog log, int sectorSize)
    {
        ArgumentNullException.ThrowIfNull(log);
        if (sectorSize is not (512 or 4096))
            throw new ArgumentOutOfRangeException(nameof(sectorSize), $"sector size {sectorSize} is not 512 or 4096.");
        return new CrashStateSpace(log, sectorSize, FindPoints(log));
    }

    private static List<CrashPoint> FindPoints(CrashLog log)
    {
        var operations = log.Operations;
        // The cut falls just before a flush or FUA completion is logged (the last moment its writes are still
        // volatile) or after the last record.
        var cuts = operations
            .Where(o => o.CompleteIndex is not null && (o.Kind == CrashLogRecordKind.Flush || o.Fua))
            .Select(o => o.CompleteIndex!.Value)
            .Append(log.Records.Count)
            .Distinct()
            .Order()
            .ToList();

        var points = new List<CrashPoint>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var cut in cuts)
        {
            // The latest successful flush completed before the cut: what completed before it began is durable.
            var flushBegin = -1;
            var epoch = 0;
            foreach (var o in operations)
            {
                if (o.Kind == CrashLogRecordKind.Flush && o.Ok == true && o.CompleteIndex < cut)
                {
                    epoch++;
                    flushBegin = Math.Max(flushBegin, o.BeginIndex);
                }
            }

            var durable = new List<CrashLogOperation>();
            var volatileOps = new List<CrashLogOperation>();
            foreach (var o in operations)
            {
                if (!o.ChangesData || o.BeginIndex >= cut)
                    continue;
                var done = o.Ok == true && o.CompleteIndex < cut;
                if (done && (o.CompleteIndex < flushBegin || o.Fua))
                    durable.Add(o);
                else
                    volatileOps.Add(o);
            }

            // The durable set only grows along the log, so its size and the volatile ids name the point.
            var key = string.Create(CultureInfo.InvariantCulture, $"{durable.Count}:{string.Join(',', volatileOps.Select(v => v.Id))}");
            if (seen.Add(key))
                points.Add(new CrashPoint(points.Count, epoch, cut, durable, volatileOps));
        }

        return points;
    }

    /// <summary>How many sectors of <see cref="SectorSize"/> the operation touches (at least 1).</summary>
    public int SectorsOf(CrashLogOperation operation)
    {
        if (operation.Length == 0)
            return 1;
        var first = operation.Offset / SectorSize;
        var last = (operation.Offset + operation.Length - 1) / SectorSize;
        return (int)Math.Min(int.MaxValue, last - first + 1);
    }

    /// <summary>Choices a write has in exhaustive numbering: dropped, kept, and for a write over n &gt; 1 sectors the
    /// n-1 torn prefixes and n-1 torn suffixes.</summary>
    public long OptionsOf(CrashLogOperation operation)
    {
        var n = SectorsOf(operation);
        return n == 1 ? 2 : 2L * n;
    }

    /// <summary>States at <paramref name="point"/> in exhaustive numbering (saturates at <see cref="long.MaxValue"/>).</summary>
    public long CountAt(CrashPoint point)
    {
        long count = 1;
        foreach (var o in point.Volatile)
        {
            var options = OptionsOf(o);
            if (count > long.MaxValue / options)
                return long.MaxValue;
            count *= options;
        }

        return count;
    }

    /// <summary>All states in exhaustive numbering (saturates at <see cref="long.MaxValue"/>).</summary>
    public long TotalCount
    {
        get
        {
            long total = 0;
            foreach (var p in Points)
            {
                var c = CountAt(p);
                if (total > long.MaxValue - c)
                    return long.MaxValue;
                total += c;
            }

            return total;
        }
    }

    /// <summary>
    /// The states to try: every state when there are at most <paramref name="maxStates"/>; otherwise a sample of
    /// <paramref name="maxStates"/> drawn with <paramref name="seed"/> (the same seed gives the same states): each
    /// point's durable prefix first (evenly spread when there are more points than half the budget), then random
    /// states at random points.
    /// </summary>
    public CrashStateSelection Select(int maxStates, int seed)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxStates, 1);
        if (TotalCount <= maxStates)
        {
            var all = Points.SelectMany(p => Enumerable.Range(0, (int)CountAt(p)).Select(i => Exhaustive(p, i))).ToList();
            return new CrashStateSelection(all, IsExhaustive: true, TotalCount);
        }

        var states = new List<CrashState>();
        var signatures = new HashSet<string>(StringComparer.Ordinal);
        var prefixes = Math.Min(Points.Count, Math.Max(1, maxStates / 2));
        for (var i = 0; i < prefixes; i++)
        {
            // Evenly spread, always including the last point (the recording's end).
            var at = prefixes == 1 ? Points.Count - 1 : (int)((long)i * (Points.Count - 1) / (prefixes - 1));
            Add(Exhaustive(Points[at], 0));
        }

        var random = new Random(seed);
        var choosable = Points.Where(p => p.Volatile.Count > 0).ToList();
        for (var attempts = 0; states.Count < maxStates && choosable.Count > 0 && attempts < maxStates * 8; attempts++)
        {
            var point = choosable[random.Next(choosable.Count)];
            Add(Sampled(point, random.Next() & 0x7fffffff));
        }

        return new CrashStateSelection(states, IsExhaustive: false, TotalCount);

        void Add(CrashState state)
        {
            if (signatures.Add(Signature(state)))
                states.Add(state);
        }
    }

    /// <summary>Rebuilds the state named by <paramref name="id"/>; throws <see cref="FormatException"/> naming the id
    /// when it does not fit this log.</summary>
    public CrashState Resolve(string id)
    {
        ArgumentNullException.ThrowIfNull(id);
        var x = id.IndexOf('x', StringComparison.Ordinal);
        var r = id.IndexOf('r', StringComparison.Ordinal);
        var split = x > 0 ? x : r;
        if (!id.StartsWith('p') || split <= 1
            || !int.TryParse(id.AsSpan(1, split - 1), NumberStyles.None, CultureInfo.InvariantCulture, out var pointIndex))
            throw new FormatException($"crash state id '{id}' is not p<point>x<index> or p<point>r<seed>.");
        if (pointIndex >= Points.Count)
            throw new FormatException($"crash state id '{id}': point {pointIndex} is past this log's last point {Points.Count - 1}.");
        var point = Points[pointIndex];
        var rest = id.AsSpan(split + 1);
        if (x > 0)
        {
            if (!long.TryParse(rest, NumberStyles.None, CultureInfo.InvariantCulture, out var index) || index >= CountAt(point))
                throw new FormatException($"crash state id '{id}': index is not below the point's {CountAt(point)} states.");
            return Exhaustive(point, index);
        }

        if (!int.TryParse(rest, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var seed) || seed < 0)
            throw new FormatException($"crash state id '{id}': seed is not a hexadecimal number.");
        return Sampled(point, seed);
    }

    /// <summary>State <paramref name="index"/> of <paramref name="point"/> in mixed-radix exhaustive numbering (digit per
    /// volatile write, first write least significant): 0 dropped, 1 kept, 2..n torn keeping the first 1..n-1
    /// sectors, n+1..2n-1 torn keeping the last 1..n-1 sectors.</summary>
    public CrashState Exhaustive(CrashPoint point, long index)
    {
        ArgumentNullException.ThrowIfNull(point);
        var choices = new List<CrashWriteChoice>(point.Volatile.Count);
        var rest = index;
        foreach (var o in point.Volatile)
        {
            var options = OptionsOf(o);
            var digit = rest % options;
            rest /= options;
            var n = SectorsOf(o);
            choices.Add(digit switch
            {
                0 => Choice(o, CrashWriteFate.Dropped, new bool[n]),
                1 => Choice(o, CrashWriteFate.Kept, Filled(n, 0, n)),
                _ when digit <= n => Choice(o, CrashWriteFate.Torn, Filled(n, 0, (int)digit - 1)),
                _ => Choice(o, CrashWriteFate.Torn, Filled(n, n - (int)(digit - n), n)),
            });
        }

        return new CrashState(string.Create(CultureInfo.InvariantCulture, $"p{point.Index}x{index}"), point, choices);
    }

    /// <summary>The state <paramref name="seed"/> draws at <paramref name="point"/>: each volatile write dropped or kept
    /// with probability 3/8, torn (a random set of its sectors, neither none nor all) with 1/4 when it spans more
    /// than one sector.</summary>
    public CrashState Sampled(CrashPoint point, int seed)
    {
        ArgumentNullException.ThrowIfNull(point);
        var random = new Random(seed);
        var choices = new List<CrashWriteChoice>(point.Volatile.Count);
        foreach (var o in point.Volatile)
        {
            var n = SectorsOf(o);
            var roll = random.Next(8);
            if (n == 1 || roll < 6)
            {
                choices.Add(roll % 2 == 0
                    ? Choice(o, CrashWriteFate.Dropped, new bool[n])
                    : Choice(o, CrashWriteFate.Kept, Filled(n, 0, n)));
                continue;
            }

            var mask = new bool[n];
            for (var i = 0; i < n; i++)
                mask[i] = random.Next(2) == 1;
            // A tear keeps some sectors and loses some: force one of each.
            mask[random.Next(n)] = true;
            var lost = random.Next(n);
            if (mask.All(k => k))
                mask[lost] = false;
            choices.Add(Choice(o, CrashWriteFate.Torn, mask));
        }

        return new CrashState(string.Create(CultureInfo.InvariantCulture, $"p{point.Index}r{seed:x}"), point, choices);
    }

    private CrashWriteChoice Choice(CrashLogOperation o, CrashWriteFate fate, bool[] keptSectors)
    {
        var ranges = new List<(long Offset, long Length)>();
        var kept = 0;
        var firstSector = o.Offset / SectorSize;
        var end = o.Offset + o.Length;
        for (var i = 0; i < keptSectors.Length; i++)
        {
            if (!keptSectors[i])
                continue;
            kept++;
            var start = Math.Max(o.Offset, (firstSector + i) * SectorSize);
            var stop = Math.Min(end, (firstSector + i + 1) * SectorSize);
            if (ranges.Count > 0 && ranges[^1].Offset + ranges[^1].Length == start)
                ranges[^1] = (ranges[^1].Offset, ranges[^1].Length + stop - start);
            else if (stop > start)
                ranges.Add((start, stop - start));
        }

        return new CrashWriteChoice(o, fate, keptSectors.Length, ranges) { SectorsKept = kept };
    }

    private static bool[] Filled(int n, int from, int to)
    {
        var mask = new bool[n];
        for (var i = from; i < to; i++)
            mask[i] = true;
        return mask;
    }

    private static string Signature(CrashState state) =>
        string.Create(CultureInfo.InvariantCulture,
            $"{state.Point.Index}|{string.Join(';', state.Choices.Select(c => string.Join(',', c.KeptRanges.Select(r => $"{r.Offset}+{r.Length}"))))}");
}
