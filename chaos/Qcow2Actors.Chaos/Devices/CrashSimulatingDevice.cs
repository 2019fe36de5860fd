using System.IO.Hashing;
using System.Text;
using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Chaos.Devices;

/// <summary>
/// An in-memory <see cref="IBlockDevice"/> that remembers what a real disk would have made
/// durable: the image as of the last successful <see cref="BlockDevice.Flush"/>, and every write and
/// length change issued since. Reads see all completed writes (as through a page cache);
/// <see cref="Crash"/> and <see cref="EnumerateCrashStates"/> produce what the disk could
/// hold after a power cut at this instant.
/// </summary>
/// <remarks>
/// Thread-safe: the engine writes from many tasks at once. An operation is recorded when its
/// call completes, which is when a caller may rely on its ordering relative to a later flush.
/// </remarks>
public sealed class CrashSimulatingDevice : BlockDevice
{
    /// <summary>The unit a disk writes atomically; tears happen only at multiples of it.</summary>
    public const int SectorSize = 512;

    private readonly Lock _gate = new();
    private readonly ByteImage _current;
    private readonly List<PendingOperation> _pending = [];
    private ByteImage _durable;
    private long _sequence;
    private int _flushes;
    private long _operationsUntilPowerCut = -1;
    private bool _poweredOff;
    private bool _disposed;

    /// <summary>Creates an empty device (nothing written, nothing pending).</summary>
    public CrashSimulatingDevice(string name = "crash-sim") : this(ReadOnlySpan<byte>.Empty, name)
    {
    }

    /// <summary>Creates a device whose flushed image is a copy of <paramref name="content"/>.</summary>
    public CrashSimulatingDevice(ReadOnlySpan<byte> content, string name = "crash-sim")
    {
        _current = new ByteImage(content);
        _durable = _current.Clone();
        Name = name;
    }

    /// <inheritdoc />
    public override string Name { get; }

    /// <inheritdoc />
    public override bool IsReadOnly => false;

    /// <inheritdoc />
    public override long Length
    {
        get { lock (_gate) return _current.Length; }
    }

    /// <summary>Successful flushes so far.</summary>
    public int FlushCount
    {
        get { lock (_gate) return _flushes; }
    }

    /// <summary>Writes and length changes issued since the last successful flush (what a crash may lose).</summary>
    public int PendingOperationCount
    {
        get { lock (_gate) return _pending.Count; }
    }

    /// <summary>True once the power was cut: every later operation fails with EIO.</summary>
    public bool IsPoweredOff
    {
        get { lock (_gate) return _poweredOff; }
    }

    /// <summary>A copy of what every completed write left (what reads return now).</summary>
    public byte[] CurrentContent()
    {
        lock (_gate) return _current.ToArray();
    }

    /// <summary>A copy of the image as of the last successful flush.</summary>
    public byte[] DurableContent()
    {
        lock (_gate) return _durable.ToArray();
    }

    /// <summary>
    /// Cuts the power now: the pending log freezes and every later read, write, flush or
    /// length change fails with EIO, so code still running (actors, background flushes) cannot
    /// change what <see cref="Crash"/> sees.
    /// </summary>
    public void PowerCut()
    {
        lock (_gate) _poweredOff = true;
    }

    /// <summary>
    /// Arms a power cut: the next <paramref name="operations"/> writes, length changes and
    /// flushes succeed, and the one after fails with EIO as the power goes. Walking
    /// <paramref name="operations"/> over 0..N crashes a workload at every point of its I/O.
    /// </summary>
    public void PowerCutAfter(long operations)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(operations);
        lock (_gate)
        {
            _operationsUntilPowerCut = operations;
            if (operations == 0) _poweredOff = true;
        }
    }

    /// <inheritdoc />
    protected override ValueTask<int> ReadCoreAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        lock (_gate)
        {
            ThrowIfUnusable("read");
            return new(_current.Read(buffer.Span, offset));
        }
    }

    /// <inheritdoc />
    protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        lock (_gate)
        {
            ThrowIfUnusable("write");
            CountTowardsPowerCut("write");
            _current.Write(buffer.Span, offset);
            _pending.Add(new PendingOperation(++_sequence, offset, buffer.ToArray(), -1));
        }
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    protected override ValueTask FlushCoreAsync(CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            ThrowIfUnusable("flush");
            CountTowardsPowerCut("flush");
            // Replaying the log onto the durable copy costs only the pending bytes, not the image size.
            foreach (var op in _pending) op.ApplyTo(_durable);
            _pending.Clear();
            _flushes++;
        }
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public override void SetLength(long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        lock (_gate)
        {
            ThrowIfUnusable("set length");
            CountTowardsPowerCut("set length");
            _current.SetLength(length);
            _pending.Add(new PendingOperation(++_sequence, 0, null, length));
        }
    }

    /// <summary>
    /// Forgets the unsynced operations without making them durable while reads keep seeing
    /// them: what Linux does when write-back fails (the pages are marked clean, the data never
    /// reaches the disk, and a later fsync may even succeed). A later crash shows their loss.
    /// </summary>
    public void LoseUnsyncedWrites()
    {
        lock (_gate) _pending.Clear();
    }

    /// <summary>
    /// What the disk could hold if the power failed now, under <paramref name="mode"/>, with
    /// choices drawn from <paramref name="random"/> (seed it to reproduce a state).
    /// The device itself is unchanged; call <see cref="CrashImage.Reboot"/> to continue on the result.
    /// </summary>
    public CrashImage Crash(CrashMode mode, Random random)
    {
        ArgumentNullException.ThrowIfNull(random);
        var (durable, pending) = Snapshot();
        return Build(durable, pending, mode, random, prefix: null);
    }

    /// <summary>
    /// Up to <paramref name="max"/> distinct crash states of the current instant: first the
    /// flushed image and the everything-survived image, then every prefix of the unsynced
    /// operations (while they fit in <paramref name="max"/>), then random subsets, torn last
    /// writes and per-sector tears drawn from <paramref name="random"/>. Identical byte
    /// contents are yielded once, so a test does not pay twice for the same recovery.
    /// </summary>
    public IEnumerable<CrashImage> EnumerateCrashStates(int max, Random random)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(max);
        ArgumentNullException.ThrowIfNull(random);
        var (durable, pending) = Snapshot();
        return Enumerate(durable, pending, max, random);
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        lock (_gate) _disposed = true;
    }

    private static IEnumerable<CrashImage> Enumerate(ByteImage durable, PendingOperation[] pending, int max, Random random)
    {
        var seen = new HashSet<UInt128>();
        var yielded = 0;
        bool Fresh(CrashImage image) => seen.Add(XxHash128.HashToUInt128(image.Content));

        IEnumerable<CrashImage> Fixed()
        {
            yield return Build(durable, pending, CrashMode.LoseUnsynced, random, null);
            yield return Build(durable, pending, CrashMode.KeepAll, random, null);
            // Every prefix is the cheap, exhaustive part of the space: ordered write-back caches crash at exactly these points.
            if (pending.Length + 1 <= max)
                for (var k = 1; k < pending.Length; k++)
                    yield return Build(durable, pending, CrashMode.KeepPrefix, random, k);
        }

        foreach (var image in Fixed())
        {
            if (yielded >= max) yield break;
            if (!Fresh(image)) continue;
            yielded++;
            yield return image;
        }

        if (pending.Length == 0) yield break;
        CrashMode[] randomModes = [CrashMode.KeepSubset, CrashMode.TearLast, CrashMode.TearAny, CrashMode.KeepPrefix];
        // Small logs have few distinct states; stop after a run of duplicates instead of spinning.
        var misses = 0;
        while (yielded < max && misses < 64 + max)
        {
            var image = Build(durable, pending, randomModes[random.Next(randomModes.Length)], random, null);
            if (!Fresh(image))
            {
                misses++;
                continue;
            }
            yielded++;
            yield return image;
        }
    }

    private static CrashImage Build(ByteImage durable, PendingOperation[] pending, CrashMode mode, Random random, int? prefix)
    {
        var image = durable.Clone();
        var span = pending.Length == 0 ? "nothing pending" : $"ops #{pending[0].Sequence}..#{pending[^1].Sequence}";
        switch (mode)
        {
            case CrashMode.LoseUnsynced:
                return new CrashImage(image.ToArray(), mode, $"LoseUnsynced: {span} lost");
            case CrashMode.KeepAll:
                foreach (var op in pending) op.ApplyTo(image);
                return new CrashImage(image.ToArray(), mode, $"KeepAll: {span} kept");
            case CrashMode.KeepPrefix:
            {
                var k = prefix ?? random.Next(pending.Length + 1);
                for (var i = 0; i < k; i++) pending[i].ApplyTo(image);
                return new CrashImage(image.ToArray(), mode, $"KeepPrefix: first {k} of {span} kept");
            }
            case CrashMode.KeepSubset:
            {
                var kept = new List<long>();
                foreach (var op in pending)
                {
                    if (random.Next(2) == 0) continue;
                    op.ApplyTo(image);
                    kept.Add(op.Sequence);
                }
                return new CrashImage(image.ToArray(), mode, $"KeepSubset: kept [{Join(kept)}] of {span}");
            }
            case CrashMode.TearLast:
                return TearLast(image, pending, random, span);
            case CrashMode.TearAny:
                return TearAny(image, pending, random, span);
            default:
                throw new ArgumentOutOfRangeException(nameof(mode), mode, "unknown crash mode");
        }
    }

    private static CrashImage TearLast(ByteImage image, PendingOperation[] pending, Random random, string span)
    {
        // Tear a write, not a length change: a truncate is a metadata operation that happens or does not.
        var writes = Enumerable.Range(0, pending.Length).Where(i => pending[i].Data is not null).ToArray();
        if (writes.Length == 0) return Build(image, pending, CrashMode.KeepPrefix, random, null);
        var torn = writes[random.Next(writes.Length)];
        for (var i = 0; i < torn; i++) pending[i].ApplyTo(image);
        var op = pending[torn];
        var sectors = op.SectorCount;
        var keep = new bool[sectors];
        for (var s = 0; s < sectors; s++) keep[s] = random.Next(2) == 1;
        if (sectors > 1)
        {
            // A tear means some sectors new and some old; all-or-nothing is what KeepPrefix already covers.
            var newOne = random.Next(sectors);
            var oldOne = (newOne + 1 + random.Next(sectors - 1)) % sectors;
            keep[newOne] = true;
            keep[oldOne] = false;
        }
        var newSectors = new List<long>();
        for (var s = 0; s < sectors; s++)
        {
            if (!keep[s]) continue;
            op.ApplySectorTo(image, s);
            newSectors.Add(s);
        }
        return new CrashImage(image.ToArray(), CrashMode.TearLast,
            $"TearLast: first {torn} of {span} kept, op #{op.Sequence} ({op.Offset}+{op.Data!.Length}) torn, new sectors [{Join(newSectors)}] of {sectors}");
    }

    private static CrashImage TearAny(ByteImage image, PendingOperation[] pending, Random random, string span)
    {
        // Replay the log, remembering every content each touched sector passed through.
        var replay = image.Clone();
        var lengths = new List<long> { replay.Length };
        var versions = new Dictionary<long, List<byte[]>>();
        void Remember(long sector)
        {
            if (!versions.TryGetValue(sector, out var list))
                versions[sector] = list = [SectorOf(image, sector)];
            list.Add(SectorOf(replay, sector));
        }

        foreach (var op in pending)
        {
            var before = replay.Length;
            op.ApplyTo(replay);
            lengths.Add(replay.Length);
            var (from, to) = op.Data is null
                ? (Math.Min(before, replay.Length), Math.Max(before, replay.Length))
                : (op.Offset, op.Offset + op.Data.Length);
            for (var s = from / SectorSize; s * SectorSize < to; s++) Remember(s);
        }

        var length = lengths[random.Next(lengths.Count)];
        image.SetLength(length);
        var mixed = 0;
        foreach (var (sector, list) in versions)
        {
            var start = sector * SectorSize;
            if (start >= length) continue;
            var pick = random.Next(list.Count);
            if (pick != 0) mixed++;
            var bytes = list[pick].AsSpan(0, (int)Math.Min(SectorSize, length - start));
            image.Write(bytes, start);
        }
        return new CrashImage(image.ToArray(), CrashMode.TearAny,
            $"TearAny: {span}, length {length}, {mixed} of {versions.Count} touched sectors took a newer version");
    }

    private static byte[] SectorOf(ByteImage image, long sector)
    {
        var bytes = new byte[SectorSize];
        image.Read(bytes, sector * SectorSize);
        return bytes;
    }

    private static string Join(IEnumerable<long> values)
    {
        var sb = new StringBuilder();
        foreach (var v in values)
        {
            if (sb.Length > 0) sb.Append(',');
            sb.Append(v);
        }
        return sb.ToString();
    }

    private (ByteImage Durable, PendingOperation[] Pending) Snapshot()
    {
        lock (_gate) return (_durable.Clone(), [.. _pending]);
    }

    private void CountTowardsPowerCut(string operation)
    {
        if (_operationsUntilPowerCut < 0) return;
        if (_operationsUntilPowerCut == 0)
        {
            _poweredOff = true;
            throw new ChaosIOException(Name, operation, Errno.EIO, "power cut");
        }
        _operationsUntilPowerCut--;
    }

    private void ThrowIfUnusable(string operation)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_poweredOff) throw new ChaosIOException(Name, operation, Errno.EIO, "power is off");
    }

    /// <summary>A write (Data set) or a length change (Data null, NewLength set), numbered in issue order.</summary>
    private sealed record PendingOperation(long Sequence, long Offset, byte[]? Data, long NewLength)
    {
        public int SectorCount => Data is null || Data.Length == 0
            ? 0
            : (int)((Offset + Data.Length - 1) / SectorSize - Offset / SectorSize + 1);

        public void ApplyTo(ByteImage image)
        {
            if (Data is null) image.SetLength(NewLength);
            else image.Write(Data, Offset);
        }

        /// <summary>Applies the part of this write that falls in its <paramref name="index"/>-th sector (sectors counted on absolute offsets).</summary>
        public void ApplySectorTo(ByteImage image, int index)
        {
            var sectorStart = (Offset / SectorSize + index) * SectorSize;
            var from = Math.Max(Offset, sectorStart);
            var to = Math.Min(Offset + Data!.Length, sectorStart + SectorSize);
            image.Write(Data.AsSpan((int)(from - Offset), (int)(to - from)), from);
        }
    }
}
