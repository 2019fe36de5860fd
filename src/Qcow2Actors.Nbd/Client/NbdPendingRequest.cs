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
    public long Covered { get; set; }

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
