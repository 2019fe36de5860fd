using static Qcow2Actors.Nbd.Protocol.NbdProtocol;

namespace Qcow2Actors.Nbd.Protocol;

/// <summary>
/// Decides when a finished small reply may wait for company: while other requests of its connection are still
/// running and will answer soon, it waits (at most <see cref="Limit"/> replies, at most <see cref="Bound"/>) so
/// that they leave in one send. A pipelining client then gets several replies per wake-up and the server makes one
/// system call for them. On a small machine where server and client share the cores, a loopback send also runs the
/// client's TCP receive path and wakes it: 4 KiB allocating writes at depth 16 went from 0.58 to 0.27 sends per
/// write (bench/results/allocwrite-reply-hold-2026-12-02.md).
/// </summary>
/// <remarks>
/// Only requests expected to answer quickly count as running: reads, writes, zeroes, trims and block status
/// without FUA. A FLUSH or a FUA write waits for the disk and would hold every reply behind it, so it neither
/// counts nor is waited for. A reply that carries file data, or is larger than the sender coalesces, goes at
/// once: holding it would hold pinned clusters or a large buffer. With one request in flight nothing is held.
/// The running count is the connection's alone: the reader adds to it as it dispatches (<see cref="Started"/>)
/// and the sender takes from it, under its lock, as each counted reply arrives (<see cref="Ended"/>).
/// </remarks>
internal sealed class ReplyHold
{
    /// <summary>Most replies held back at once; the next one sends them all.</summary>
    public const int Limit = 4;

    /// <summary>
    /// Longest a reply waits for company (a running request that is slow after all: a write throttled by the
    /// page cache, a read from a slow disk).
    /// </summary>
    public static readonly TimeSpan Bound = TimeSpan.FromMilliseconds(1);

    private int _running;

    /// <summary>Counted requests dispatched whose reply has not arrived yet.</summary>
    public int Running => Volatile.Read(ref _running);

    /// <summary>Whether <paramref name="request"/> counts as running until its reply arrives.</summary>
    public static bool Counts(in NbdRequest request) =>
        request.Type is CmdRead or CmdWrite or CmdWriteZeroes or CmdTrim or CmdBlockStatus && !request.Has(CmdFlagFua);

    /// <summary>The reader hands <paramref name="request"/> on (to run, or to be refused).</summary>
    public void Started(in NbdRequest request)
    {
        if (Counts(request)) Interlocked.Increment(ref _running);
    }

    /// <summary>A reply arrived for a request that counted.</summary>
    public void Ended() => Interlocked.Decrement(ref _running);

    /// <summary>
    /// Whether <paramref name="reply"/> may wait, with <paramref name="queued"/> replies (itself included) waiting,
    /// after its own request's <see cref="Ended"/>.
    /// </summary>
    public bool MayWait(in OutgoingReply reply, int queued, int coalesceLimit) =>
        reply.Counted && reply.Body is null && reply.Length <= coalesceLimit && queued < Limit && Running > 0;
}
