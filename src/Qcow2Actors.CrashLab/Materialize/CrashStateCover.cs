namespace Qcow2Actors.CrashLab.Materialize;

/// <summary>
/// Which operation last set each byte of a crash state: disjoint segments, each the range of one applied write
/// (its bytes from the log) or one zeroing (WRITE_ZEROES or TRIM). Its size grows with the number of applied
/// operations, not with the bytes they wrote: those stay in the log until a state is written out.
/// </summary>
internal sealed class CrashStateCover
{
    /// <summary>[Start, End) set by <paramref name="Operation"/>: its data there for a WRITE, zeros otherwise.</summary>
    public readonly record struct Segment(long Start, long End, CrashLogOperation Operation)
    {
        public bool Zeroes => Operation.Kind != CrashLogRecordKind.Write;

        /// <summary>The bytes of [from, from + target.Length), which lies inside this segment.</summary>
        public void CopyTo(long from, Span<byte> target)
        {
            if (Zeroes) target.Clear();
            else Operation.Data.Span.Slice((int)(from - Operation.Offset), target.Length).CopyTo(target);
        }
    }

    private sealed class ByStart : IComparer<Segment>
    {
        public static readonly ByStart Instance = new();
        public int Compare(Segment x, Segment y) => x.Start.CompareTo(y.Start);
    }

    private readonly SortedSet<Segment> _segments = new(ByStart.Instance);

    /// <summary>The segments in offset order.</summary>
    public IEnumerable<Segment> Segments => _segments;

    /// <summary><paramref name="operation"/> sets [offset, offset + length), over whatever set it before.</summary>
    public void Apply(CrashLogOperation operation, long offset, long length)
    {
        if (length <= 0) return;
        long end = offset + length;
        var overlapping = Overlapping(offset, end).ToList();
        foreach (var old in overlapping)
        {
            _segments.Remove(old);
            if (old.Start < offset) _segments.Add(old with { End = offset });
            if (old.End > end) _segments.Add(old with { Start = end });
        }
        _segments.Add(new Segment(offset, end, operation));
    }

    /// <summary>The segments that overlap [start, end), in offset order.</summary>
    public IEnumerable<Segment> Overlapping(long start, long end)
    {
        if (_segments.Count == 0 || start >= end) yield break;
        // The last segment starting at or before start may reach into the range; the rest start inside it.
        // (A view's Max walks down the tree; its Count would walk the whole view. Empty, Max is the default.)
        var before = _segments.GetViewBetween(new Segment(long.MinValue, 0, null!), new Segment(start, 0, null!)).Max;
        if (before.Operation is not null && before.End > start) yield return before;
        if (start + 1 > end - 1) yield break;
        foreach (var segment in _segments.GetViewBetween(new Segment(start + 1, 0, null!), new Segment(end - 1, 0, null!)))
            yield return segment;
    }
}
