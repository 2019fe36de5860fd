namespace Qcow2Actors.Engine.Journal;

/// <summary>
/// Journal space reserved ahead of the append position of one persistence id's file, so a
/// commit never meets a full disk: the file keeps a region past its end allocated (fallocate
/// KEEP_SIZE), and the engine checks, before it accepts a request that will produce records,
/// that the region still holds every record not yet written plus <see cref="Margin"/>. When it
/// does not, the region is grown by <see cref="Chunk"/>; if the disk is full that request fails
/// with <see cref="Qcow2NoSpaceException"/>, and nothing was applied. Shared between the engine
/// (which counts pending record bytes) and <see cref="JournalFile"/> (which reserves and appends).
/// </summary>
internal sealed class JournalReservation
{
    /// <summary>Reserved space kept free beyond what pending records need (covers batch framing and bulk records).</summary>
    public const long Margin = 1 << 20;

    /// <summary>How much more is reserved at once when the free reserved space falls under <see cref="Margin"/>.</summary>
    public const long Chunk = 4 << 20;

    /// <summary>A request that only frees space (discard, unmapping zero writes) may still use the last reserved bytes.</summary>
    public const long FreeingMinimum = 64 << 10;

    /// <summary>Upper bound on the journal bytes of one metadata record (the largest encodes to 29).</summary>
    public const int RecordBound = 32;

    private JournalFile? _file;
    private long _end;
    private long _reservedEnd;
    private long _pending;
    private bool _unsupported;

    /// <summary>Bytes reserved past the end and not yet promised to pending records.</summary>
    public long Headroom => Volatile.Read(ref _reservedEnd) - Volatile.Read(ref _end) - Interlocked.Read(ref _pending);

    /// <summary>True when there is nothing to check: no file journal behind it yet, or a filesystem without preallocation.</summary>
    public bool Unchecked => Volatile.Read(ref _file) is null || Volatile.Read(ref _unsupported);

    /// <summary>Records of <paramref name="bytes"/> were accepted (positive) or written (negative).</summary>
    public void AddPending(long bytes) => Interlocked.Add(ref _pending, bytes);

    /// <summary>
    /// Makes sure the reserved region holds the pending records plus <see cref="Margin"/>
    /// (<see cref="FreeingMinimum"/> for a request that only frees space), growing it if needed.
    /// Blocking (fallocate under the file's lock): call it off the actor's thread.
    /// </summary>
    /// <exception cref="Qcow2NoSpaceException">The region could not grow enough: the disk is full.</exception>
    public void EnsureHeadroom(bool freeingOnly)
    {
        if (Unchecked || Headroom >= Margin) return;
        var file = Volatile.Read(ref _file);
        if (file is null) return;
        try
        {
            lock (file) file.Reserve(Volatile.Read(ref _end) + Interlocked.Read(ref _pending) + Margin + Chunk);
        }
        catch (Qcow2NoSpaceException) when (freeingOnly && Headroom >= FreeingMinimum)
        {
            // Freeing space must stay possible on a full disk while the last reserved bytes last.
        }
        catch (Qcow2NoSpaceException ex) when (Headroom < (freeingOnly ? FreeingMinimum : Margin))
        {
            throw new Qcow2NoSpaceException($"no space left to reserve journal space in {file.Path}", ex);
        }
    }

    /// <summary>The file attached (opened or rescanned) or detached (closed).</summary>
    internal void Attach(JournalFile? file)
    {
        Volatile.Write(ref _file, file);
        Volatile.Write(ref _unsupported, false);
        Update(0, 0);
    }

    private Metrics.ImageMetrics? _metrics;

    /// <summary>Where the bytes the file appends are counted (the image open on this journal now).</summary>
    internal void CountAppendsIn(Metrics.ImageMetrics metrics) => Volatile.Write(ref _metrics, metrics);

    /// <summary>The file appended <paramref name="bytes"/> (called under the file's lock).</summary>
    internal void Appended(long bytes) => Volatile.Read(ref _metrics)?.JournalAppended(bytes);

    /// <summary>The file's append position and the end of its reserved region (called under the file's lock).</summary>
    internal void Update(long end, long reservedEnd)
    {
        Volatile.Write(ref _end, end);
        Volatile.Write(ref _reservedEnd, Math.Max(end, reservedEnd));
    }

    /// <summary>The filesystem cannot preallocate: nothing can be reserved, and nothing is checked.</summary>
    internal void MarkUnsupported() => Volatile.Write(ref _unsupported, true);
}
