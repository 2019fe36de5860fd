using System.Globalization;
using System.IO.Hashing;
using System.Text;

namespace Qcow2Actors.Chaos.PowerLoss;

/// <summary>
/// Walks a run's call log and produces its crash states in a fixed order (the same log and seed
/// give the same states): for each flush interval, for each crash point in it (before each call,
/// and before the closing flush), the prefix that reached the disk, then random variants that drop,
/// reorder and tear the unsynced calls. Identical (image, journal) pairs are produced once.
/// </summary>
internal sealed class CrashStateEnumerator
{
    private static readonly CrashStateKind[] Variants =
    [
        CrashStateKind.Subset, CrashStateKind.Reordered, CrashStateKind.Torn512, CrashStateKind.Torn4K,
        CrashStateKind.TornEverywhere512, CrashStateKind.TornEverywhere4K,
    ];

    private readonly RecordedRun _run;
    private readonly int _budget;
    private readonly Random _random;

    public CrashStateEnumerator(RecordedRun run, int budget, int seed)
    {
        _run = run;
        _budget = budget;
        _random = new Random(seed);
    }

    /// <summary>
    /// Yields up to the budget's states; before each one, <paramref name="device"/> is reset to
    /// its image bytes (the device is shared: consume each state before asking for the next).
    /// </summary>
    public IEnumerable<CrashState> Enumerate(StateDevice device, bool dropAFlushedWrite = false)
    {
        var log = _run.Log;
        var intervals = new List<(int Start, int End)>();
        var start = 0;
        for (var i = 0; i < log.Count; i++)
        {
            if (!log[i].IsFlush) continue;
            intervals.Add((start, i));
            start = i + 1;
        }
        intervals.Add((start, log.Count));

        var points = intervals.Sum(iv => iv.End - iv.Start + 1);
        var unsyncedPoints = intervals.Sum(iv => iv.End - iv.Start);
        // Every crash point once, the rest of the budget spread as random variants over the points with something unsynced.
        var stride = points > _budget ? (double)points / _budget : 1.0;
        var variantsPerPoint = points >= _budget || unsyncedPoints == 0 ? 0 : Math.Min(64, (_budget - points) / unsyncedPoints + 1);

        var durable = new Devices.ByteImage(_run.InitialImage);
        var model = new Workloads.DiskModel(_run.Workload.Options.DiskSize, _run.InitialGuest);
        var applied = 0;
        Workloads.DiskModel? cached = null;
        var cachedAt = -1;
        // The model of a crash point: ops acknowledged when its call was issued, the next one maybe in
        // flight. (Not the interval's end: a guest flush or FUA write completes inside the interval that
        // follows its device flush, once the journal holds its records; before that nothing is promised.)
        Workloads.DiskModel ModelAt(int completed)
        {
            if (completed == cachedAt) return cached!;
            for (; applied < completed; applied++) model.Apply(_run.Workload, _run.Workload.Operations[applied]);
            cached = model.Clone();
            if (completed < _run.Workload.Operations.Count)
                cached.Apply(_run.Workload, _run.Workload.Operations[completed], completed: false);
            cachedAt = completed;
            return cached;
        }
        var seen = new HashSet<(UInt128, UInt128)>();
        var journalHashes = new Dictionary<byte[], UInt128>(ReferenceEqualityComparer.Instance);
        var produced = 0;
        var nextPoint = 0.0;
        var point = 0;
        for (var k = 0; k < intervals.Count && produced < _budget; k++)
        {
            var (from, to) = intervals[k];
            var flush = to < log.Count ? log[to] : null;
            var after = from == 0 ? "start" : $"flush #{log[from - 1].Sequence}";

            for (var m = 0; m <= to - from && produced < _budget; m++, point++)
            {
                if (point < nextPoint) continue;
                nextPoint += stride;
                var journal = from + m < log.Count ? log[from + m].Journal : _run.FinalJournal;
                var pointModel = ModelAt(from + m < log.Count ? log[from + m].Completed : _run.Workload.Operations.Count);
                var before = from + m < log.Count ? $"call #{log[from + m].Sequence}{(log[from + m].IsFlush ? " (flush)" : "")}" : "the end";
                var head = $"interval {k} after {after}, crash before {before}, {m} unsynced";
                var tries = m == 0 ? 1 : 1 + variantsPerPoint;
                for (var v = 0; v < tries && produced < _budget; v++)
                {
                    var kind = v == 0 ? CrashStateKind.Prefix : Variants[_random.Next(Variants.Length)];
                    device.Reset(durable.Span);
                    var detail = Build(device, log, from, m, kind);
                    if (!seen.Add((XxHash128.HashToUInt128(device.Content), JournalHash(journal, journalHashes)))) continue;
                    yield return new CrashState
                    {
                        Index = produced++,
                        Kind = kind,
                        Description = $"{head}: {kind} {detail}",
                        Journal = journal,
                        Model = pointModel,
                    };
                }
            }
            // The flush made the interval durable; a broken disk (for the harness's own test) forgets the first write of each.
            for (var i = from; i < to; i++)
            {
                var call = log[i];
                if (dropAFlushedWrite && flush is not null && i == from && call.IsWrite) continue;
                if (call.Data is null) durable.SetLength(call.NewLength);
                else durable.Write(call.Data, call.Offset);
            }
        }
    }

    private static UInt128 JournalHash(byte[]? journal, Dictionary<byte[], UInt128> cache)
    {
        if (journal is null) return UInt128.Zero;
        if (!cache.TryGetValue(journal, out var hash)) cache[journal] = hash = XxHash128.HashToUInt128(journal) | 1;
        return hash;
    }

    /// <summary>Applies the state's share of calls <paramref name="from"/>..+<paramref name="m"/> to the device; returns what it kept and tore.</summary>
    private string Build(StateDevice device, IReadOnlyList<LoggedCall> log, int from, int m, CrashStateKind kind)
    {
        switch (kind)
        {
            case CrashStateKind.Prefix:
                for (var i = from; i < from + m; i++) device.Apply(log[i]);
                return "";
            case CrashStateKind.Subset:
            {
                var kept = Subset(from, m);
                foreach (var i in kept) device.Apply(log[i]);
                return $"kept {Calls(log, kept)}";
            }
            case CrashStateKind.Reordered:
            {
                var kept = Subset(from, m);
                // Writes trade places among themselves; length changes stay where they were.
                var writeSlots = kept.Where(i => log[i].IsWrite).ToArray();
                var shuffled = writeSlots.ToArray();
                _random.Shuffle(shuffled);
                var order = kept.ToArray();
                for (int i = 0, w = 0; i < order.Length; i++)
                    if (log[order[i]].IsWrite) order[i] = shuffled[w++];
                foreach (var i in order) device.Apply(log[i]);
                return $"in order {Calls(log, order)}";
            }
            case CrashStateKind.Torn512:
            case CrashStateKind.Torn4K:
            {
                var sector = kind == CrashStateKind.Torn512 ? 512 : 4096;
                var writes = Enumerable.Range(from, m).Where(i => log[i].IsWrite).ToArray();
                if (writes.Length == 0) goto case CrashStateKind.Subset;
                var torn = writes[_random.Next(writes.Length)];
                var kept = Subset(from, m);
                var newSectors = new List<long>();
                foreach (var i in kept.Append(torn).Distinct().Order())
                {
                    if (i != torn)
                    {
                        device.Apply(log[i]);
                        continue;
                    }
                    var call = log[i];
                    var first = call.Offset / sector;
                    var last = (call.Offset + call.Data!.Length - 1) / sector;
                    var count = (int)(last - first + 1);
                    var keep = new bool[count];
                    for (var s = 0; s < count; s++) keep[s] = _random.Next(2) == 1;
                    if (count > 1)
                    {
                        // A tear: some sectors new, some old (all or nothing is what the subsets cover).
                        var newOne = _random.Next(count);
                        keep[newOne] = true;
                        keep[(newOne + 1 + _random.Next(count - 1)) % count] = false;
                    }
                    for (var s = 0; s < count; s++)
                    {
                        if (!keep[s]) continue;
                        device.Apply(call, (first + s) * sector, (first + s + 1) * sector);
                        newSectors.Add(s);
                    }
                }
                return $"kept {Calls(log, kept.Where(i => i != torn))}, #{log[torn].Sequence} torn, new sectors [{string.Join(',', newSectors)}]";
            }
            default:
            {
                var sector = kind == CrashStateKind.TornEverywhere512 ? 512 : 4096;
                long landed = 0, total = 0;
                for (var i = from; i < from + m; i++)
                {
                    var call = log[i];
                    if (!call.IsWrite)
                    {
                        if (_random.Next(2) == 1) device.Apply(call);
                        continue;
                    }
                    var first = call.Offset / sector;
                    var last = (call.Offset + call.Data!.Length - 1) / sector;
                    for (var s = first; s <= last; s++)
                    {
                        total++;
                        if (_random.Next(2) == 0) continue;
                        landed++;
                        device.Apply(call, s * sector, (s + 1) * sector);
                    }
                }
                return string.Create(CultureInfo.InvariantCulture, $"{landed} of {total} sectors landed");
            }
        }
    }

    private List<int> Subset(int from, int m)
    {
        var kept = new List<int>(m);
        for (var i = from; i < from + m; i++)
            if (_random.Next(2) == 1) kept.Add(i);
        return kept;
    }

    private static string Calls(IReadOnlyList<LoggedCall> log, IEnumerable<int> indices)
    {
        var sb = new StringBuilder("[");
        var n = 0;
        foreach (var i in indices)
        {
            if (n++ > 0) sb.Append(',');
            if (n > 24)
            {
                sb.Append("...");
                break;
            }
            sb.Append('#').Append(log[i].Sequence);
        }
        return sb.Append(']').ToString();
    }
}
