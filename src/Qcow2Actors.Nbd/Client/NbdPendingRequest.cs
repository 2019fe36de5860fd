namespace Qcow2Actors.Nbd.Client;

/// <summary>
/// One request on the wire, from the send until its last reply chunk: the reader fills the read buffer or the
/// extents, records the first error, and completes it.
/// </summary>
internal sealed class NbdPendingRequest(ushort command, long offset, long length)
{
    private readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public ushort Command { get; } = command;
    public long Offset { get; } = offset;
    public long Length { get; } = length;

    /// <summary>Where a read's data lands; its length is <see cref="Length"/>.</summary>
    public Memory<byte> Buffer { get; init; }

    /// <summary>The context id a block-status request wants extents for.</summary>
    public uint ContextId { get; init; }

    public List<NbdExtent>? Extents { get; set; }

    /// <summary>Bytes of a structured read that data or hole chunks covered.</summary>
    public long Covered { get; private set; }

    // The [start, end) ranges (relative to Offset) the chunks covered, sorted by start and never overlapping. A read
    // gets few chunks, so a sorted list is cheap; summing lengths alone would let two overlapping chunks pass for a
    // full read while part of the buffer was never written.
    private List<(long Start, long End)>? _covered;

    /// <summary>
    /// Records a chunk over [start, start+length) of the read; false (recording nothing) when it overlaps a range an
    /// earlier chunk covered, which the NBD spec forbids. <paramref name="overlapped"/> is that earlier range.
    /// </summary>
    public bool TryCover(long start, long length, out (long Start, long End) overlapped)
    {
        _covered ??= [];
        var end = start + length;
        // The first range ending after start is the only one that can overlap without an earlier one doing so too.
        var at = 0;
        while (at < _covered.Count && _covered[at].End <= start) at++;
        if (at < _covered.Count && _covered[at].Start < end)
        {
            overlapped = _covered[at];
            return false;
        }
        _covered.Insert(at, (start, end));
        Covered += length;
        overlapped = default;
        return true;
    }

    public uint Error { get; private set; }
    public string? ErrorMessage { get; private set; }

    public Task Completion => _done.Task;

    /// <summary>Keeps the first error: later chunks may add more, but the first says what went wrong.</summary>
    public void RecordError(uint error, string? message)
    {
        if (Error != 0) return;
        Error = error == 0 ? 5 /* EIO: an error chunk must carry one; treat a zero as the generic failure */ : error;
        ErrorMessage = message;
    }

    public void Complete() => _done.TrySetResult();

    public void Fail(Exception ex) => _done.TrySetException(ex);
}
