using System.Collections;

namespace Qcow2Actors.Chaos.Workloads;

/// <summary>
/// The reference disk a crash verdict is judged against. For every byte it knows the value as
/// of the last completed flush (or a completed FUA write) and every value an operation since
/// then may have left, so after a crash it can say exactly which contents are legal: each byte
/// equals its flushed value or a value written after that flush, and nothing flushed is lost.
/// </summary>
/// <remarks>
/// A discard leaves a byte either unchanged or zero, so the model tracks "may also read as
/// zero" per byte. Operations are recorded in issue order; <see cref="Flush"/> assumes every
/// operation recorded before it completed before the flush began, which is how a sequential
/// workload runs. Not thread-safe. In memory, so the disk is bounded by <see cref="Array.MaxLength"/>.
/// </remarks>
public sealed class DiskModel
{
    private readonly byte[] _flushed;
    private readonly BitArray _flushedMayBeZero;
    private readonly byte[] _current;
    private readonly BitArray _currentMayBeZero;
    private readonly List<ModelOp> _pending = [];
    private readonly List<ModelOp> _history = [];
    private int _flushes;

    /// <summary>A disk of <paramref name="size"/> bytes holding <paramref name="initial"/> (zeros past it), all of it flushed.</summary>
    public DiskModel(long size, ReadOnlySpan<byte> initial = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(size, Array.MaxLength);
        if (initial.Length > size) throw new ArgumentException("initial content is larger than the disk", nameof(initial));
        _flushed = new byte[size];
        initial.CopyTo(_flushed);
        _current = (byte[])_flushed.Clone();
        _flushedMayBeZero = new BitArray((int)size);
        _currentMayBeZero = new BitArray((int)size);
    }

    private DiskModel(DiskModel other)
    {
        _flushed = (byte[])other._flushed.Clone();
        _flushedMayBeZero = new BitArray(other._flushedMayBeZero);
        _current = (byte[])other._current.Clone();
        _currentMayBeZero = new BitArray(other._currentMayBeZero);
        _pending.AddRange(other._pending);
        _history.AddRange(other._history);
        _flushes = other._flushes;
    }

    /// <summary>
    /// A copy that can be advanced on its own (recorded operations are shared, which only the
    /// provenance in failure messages reads), e.g. to add an interrupted op for one crash point.
    /// </summary>
    public DiskModel Clone() => new(this);

    /// <summary>Guest size in bytes.</summary>
    public long Size => _flushed.Length;

    /// <summary>Completed flushes recorded.</summary>
    public int FlushCount => _flushes;

    /// <summary>Operations recorded since the last flush (what a crash may or may not keep).</summary>
    public int PendingCount => _pending.Count;

    /// <summary>
    /// Rebuilds the model of a workload process from what it logged before it was killed: ops
    /// through <see cref="ChaosLog.LastStarted"/> may have landed, flushes reported FLUSHED and
    /// FUA ops reported DONE are durable.
    /// </summary>
    public static DiskModel FromLog(Workload workload, ChaosLog log, ReadOnlySpan<byte> initial = default)
    {
        ArgumentNullException.ThrowIfNull(workload);
        ArgumentNullException.ThrowIfNull(log);
        var model = new DiskModel(workload.Options.DiskSize, initial);
        var last = Math.Min(log.LastStarted, workload.Operations.Count - 1);
        for (var i = 0; i <= last; i++)
        {
            var op = workload.Operations[i];
            if (op.Kind == WorkloadOpKind.Flush)
            {
                if (log.Flushed.Contains(i)) model.Flush(i);
                continue;
            }
            model.Apply(workload, op, completed: log.Done.Contains(i));
        }
        return model;
    }

    /// <summary>Records workload op <paramref name="op"/>; <paramref name="completed"/> false for one a crash interrupted.</summary>
    public void Apply(Workload workload, WorkloadOp op, bool completed = true)
    {
        ArgumentNullException.ThrowIfNull(workload);
        switch (op.Kind)
        {
            case WorkloadOpKind.Write:
                Write(op.Offset, workload.DataFor(op), op.Fua, completed, op.Index);
                break;
            case WorkloadOpKind.WriteZeroes:
                WriteZeroes(op.Offset, op.Length, op.Fua, completed, op.Index);
                break;
            case WorkloadOpKind.Discard:
                Discard(op.Offset, op.Length, op.Index);
                break;
            default:
                if (completed) Flush(op.Index);
                break;
        }
    }

    /// <summary>Records a write; a completed FUA write is durable at once, an interrupted one guarantees nothing.</summary>
    public void Write(long offset, ReadOnlySpan<byte> data, bool fua = false, bool completed = true, int opIndex = -1) =>
        Record(new ModelOp(opIndex, ModelOpKind.Write, offset, data.Length, data.ToArray(), fua && completed));

    /// <summary>Records a write of zeros.</summary>
    public void WriteZeroes(long offset, long length, bool fua = false, bool completed = true, int opIndex = -1) =>
        Record(new ModelOp(opIndex, ModelOpKind.Zeroes, offset, length, null, fua && completed));

    /// <summary>Records a discard: afterwards each byte may read as zero or as before.</summary>
    public void Discard(long offset, long length, int opIndex = -1) =>
        Record(new ModelOp(opIndex, ModelOpKind.Discard, offset, length, null, false));

    /// <summary>Records a completed flush: every operation recorded so far is durable.</summary>
    public void Flush(int opIndex = -1)
    {
        foreach (var op in _pending) op.ApplyTo(_flushed, _flushedMayBeZero);
        foreach (var op in _pending) op.FlushedBy = opIndex;
        _pending.Clear();
        _flushes++;
    }

    /// <summary>
    /// Checks a read made while the disk is live (no crash in between): it must return what was
    /// last written, or zeros where a discard allows it. Null when it does, else one line naming
    /// the first wrong byte.
    /// </summary>
    public string? CheckRead(long offset, ReadOnlySpan<byte> data)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        if (offset + data.Length > Size) throw new ArgumentOutOfRangeException(nameof(data), "read past the end of the disk");
        for (var i = 0; i < data.Length; i++)
        {
            var at = (int)(offset + i);
            if (data[i] == _current[at] || (data[i] == 0 && _currentMayBeZero[at])) continue;
            return $"offset {at} (0x{at:x}): read 0x{data[i]:x2}, last written 0x{_current[at]:x2}{Provenance(at, afterCrash: false)}";
        }
        return null;
    }

    /// <summary>
    /// The verdict on an image read back after a crash and recovery: the first offset whose byte is
    /// neither its flushed value nor a value written after the last flush, or null when every byte is legal.
    /// </summary>
    internal (long Offset, string Message)? FirstIllegalByte(ReadOnlySpan<byte> image)
    {
        if (image.Length != Size)
            return (Math.Min(image.Length, Size), $"recovered image has {image.Length} bytes, the disk has {Size}");
        // The common answer is "all legal", found in vectorized runs; the byte-by-byte fold below says why when it is not.
        if (!_pending.Any(op => op.Durable) && AllLegalFast(image)) return null;
        var legal = new bool[image.Length];
        for (var b = 0; b < legal.Length; b++)
            legal[b] = image[b] == _flushed[b] || (image[b] == 0 && _flushedMayBeZero[b]);
        foreach (var op in _pending)
        {
            for (var b = op.Offset; b < op.Offset + op.Length; b++)
            {
                var matches = image[(int)b] == op.ValueAt(b);
                // A completed FUA op is durable: older values of its bytes are no longer legal.
                if (op.Durable) legal[b] = matches;
                else legal[b] |= matches || (op.Kind == ModelOpKind.Discard && image[(int)b] == 0);
            }
        }
        var bad = Array.IndexOf(legal, false);
        if (bad < 0) return null;
        var found = image[bad];
        var candidates = _pending.Where(o => bad >= o.Offset && bad < o.Offset + o.Length)
            .Select(o => $"#{Name(o)} 0x{o.ValueAt(bad):x2}").ToList();
        var later = candidates.Count == 0 ? "no write since" : "or since then " + string.Join(", ", candidates);
        return (bad, $"offset {bad} (0x{bad:x}): read 0x{found:x2}, flushed value 0x{_flushed[bad]:x2}"
            + (_flushedMayBeZero[bad] ? " (or 0x00, discarded)" : "")
            + Provenance(bad, afterCrash: true) + ", " + later);
    }

    /// <summary>
    /// True when every byte is its flushed value, zero where a discard allows it, or the value of
    /// an operation since the flush; skips runs that match one candidate at a time instead of
    /// folding every operation over every byte. Valid only while no pending op is durable.
    /// </summary>
    private bool AllLegalFast(ReadOnlySpan<byte> image)
    {
        var n = image.Length;
        var p = 0;
        while (p < n)
        {
            p += image[p..].CommonPrefixLength(_flushed.AsSpan(p));
            if (p >= n) return true;
            var best = 0;
            if (image[p] == 0 && _flushedMayBeZero[p])
            {
                var zeros = image[p..].IndexOfAnyExcept((byte)0);
                var end = zeros < 0 ? n : p + zeros;
                best = 1;
                while (p + best < end && _flushedMayBeZero[p + best]) best++;
            }
            foreach (var op in _pending)
            {
                if (p < op.Offset || p >= op.Offset + op.Length) continue;
                var span = image[p..(int)(op.Offset + op.Length)];
                int run;
                if (op.Kind == ModelOpKind.Write)
                {
                    run = span.CommonPrefixLength(op.DataFrom(p));
                }
                else
                {
                    var nonZero = span.IndexOfAnyExcept((byte)0);
                    run = nonZero < 0 ? span.Length : nonZero;
                }
                best = Math.Max(best, run);
            }
            if (best == 0) return false;
            p += best;
        }
        return true;
    }

    private void Record(ModelOp op)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(op.Offset);
        ArgumentOutOfRangeException.ThrowIfNegative(op.Length);
        if (op.Offset + op.Length > Size) throw new ArgumentOutOfRangeException(nameof(op), $"{op.Offset}+{op.Length} is past the {Size}-byte disk");
        op.ApplyTo(_current, _currentMayBeZero);
        if (op.Durable) op.ApplyTo(_flushed, _flushedMayBeZero);
        _pending.Add(op);
        _history.Add(op);
    }

    private string Provenance(long offset, bool afterCrash)
    {
        for (var i = _history.Count - 1; i >= 0; i--)
        {
            var op = _history[i];
            if (offset < op.Offset || offset >= op.Offset + op.Length) continue;
            if (afterCrash && op.FlushedBy is null && !op.Durable) continue;
            var how = op.Durable ? "FUA" : op.FlushedBy is { } f ? (f >= 0 ? $"flushed by #{f}" : "flushed") : "not flushed";
            return $" (set by #{Name(op)} {op.Kind} {op.Offset}+{op.Length}, {how})";
        }
        return " (never written: initial content)";
    }

    private static string Name(ModelOp op) => op.Index >= 0 ? op.Index.ToString(System.Globalization.CultureInfo.InvariantCulture) : "?";

    private enum ModelOpKind
    {
        Write,
        Zeroes,
        Discard,
    }

    private sealed class ModelOp(int index, ModelOpKind kind, long offset, long length, byte[]? data, bool durable)
    {
        public int Index { get; } = index;

        public ModelOpKind Kind { get; } = kind;

        public long Offset { get; } = offset;

        public long Length { get; } = length;

        public bool Durable { get; } = durable;

        public int? FlushedBy { get; set; }

        public byte ValueAt(long offset) => data is null ? (byte)0 : data[offset - Offset];

        /// <summary>A write's bytes from guest offset <paramref name="offset"/> to its end.</summary>
        public ReadOnlySpan<byte> DataFrom(long offset) => data.AsSpan((int)(offset - Offset));

        public void ApplyTo(byte[] bytes, BitArray mayBeZero)
        {
            var (start, count) = ((int)Offset, (int)Length);
            switch (Kind)
            {
                case ModelOpKind.Write:
                    data!.CopyTo(bytes.AsSpan(start));
                    for (var i = start; i < start + count; i++) mayBeZero[i] = false;
                    break;
                case ModelOpKind.Zeroes:
                    bytes.AsSpan(start, count).Clear();
                    for (var i = start; i < start + count; i++) mayBeZero[i] = false;
                    break;
                default:
                    for (var i = start; i < start + count; i++) mayBeZero[i] = true;
                    break;
            }
        }
    }
}
