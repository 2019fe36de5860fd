namespace Qcow2Actors.Host.Cluster.Forwarding;

/// <summary>The messages one node's proxy export and an image's owner exchange (bound to <see cref="ForwardingSerializer"/>).</summary>
internal interface IForwardingMessage;

/// <summary>The NBD command a <see cref="ForwardedRequest"/> carries.</summary>
internal enum ForwardedOp : byte
{
    Read = 1,
    Write = 2,
    WriteZeroes = 3,
    Trim = 4,
    Flush = 5,
    BlockStatus = 6,
}

/// <summary>Flags of a forwarded request (NBD's FUA, NO_HOLE, FAST_ZERO as the export sees them).</summary>
[Flags]
internal enum ForwardedFlags : byte
{
    None = 0,
    Fua = 1,
    MayUnmap = 2,
    FastZero = 4,
}

/// <summary>
/// One NBD request sent to the image's owner through the shard region (wrapped in a sharding envelope whose entity
/// id is TENANT/IMAGE). <see cref="Data"/> is the write payload (empty otherwise).
/// </summary>
internal sealed record ForwardedRequest(ForwardedOp Op, ForwardedFlags Flags, long Offset, long Length, byte[] Data) : IForwardingMessage;

/// <summary>How the owner answered a <see cref="ForwardedRequest"/>.</summary>
internal enum ForwardedStatus : byte
{
    /// <summary>Done; the reply's payload is the result.</summary>
    Ok = 0,

    /// <summary>The export failed the request with <see cref="ForwardedReply.Error"/> (an errno NBD allows).</summary>
    Failed = 1,

    /// <summary>The entity does not serve the image (starting, handing off, or failed to open): ask again.</summary>
    Moved = 2,
}

/// <summary>
/// The owner's answer: the status, the owner life that served it (<see cref="Life"/>: the disk contract's
/// incarnation), the owner's node address (so the proxy can tell when that node is gone), and the payload: the
/// bytes read, or the block-status extents as (length, flags) pairs.
/// </summary>
internal sealed record ForwardedReply(ForwardedStatus Status, OwnerLife Life, string Owner, uint Error, string Message, byte[] Data,
    IReadOnlyList<Qcow2Actors.Nbd.NbdExtent> Extents) : IForwardingMessage
{
    /// <summary>A <see cref="ForwardedStatus.Moved"/> answer.</summary>
    public static ForwardedReply Moved(string owner, string why) => new(ForwardedStatus.Moved, default, owner, 0, why, [], []);
}

/// <summary>
/// One life of an image's owner (an entity that opened the image). <see cref="Incarnation"/> grows by one with every
/// open for writing (kept in PostgreSQL); <see cref="LostThrough"/> is the highest earlier incarnation that ended
/// without a clean close (0: none), whose acknowledged but unflushed writes may therefore be gone.
/// </summary>
internal readonly record struct OwnerLife(long Incarnation, long LostThrough);
