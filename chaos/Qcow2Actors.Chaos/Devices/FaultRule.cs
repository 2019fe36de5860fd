namespace Qcow2Actors.Chaos.Devices;

/// <summary>Device operations a <see cref="FaultRule"/> can match.</summary>
[Flags]
public enum FaultOperations
{
    /// <summary>Matches nothing.</summary>
    None = 0,

    /// <summary>Read and ReadAsync.</summary>
    Read = 1,

    /// <summary>Write and WriteAsync.</summary>
    Write = 2,

    /// <summary>Flush (fdatasync).</summary>
    Flush = 4,

    /// <summary>SetLength (truncate or extend).</summary>
    SetLength = 8,

    /// <summary>Everything that changes the device.</summary>
    Mutations = Write | Flush | SetLength,

    /// <summary>Every operation.</summary>
    All = Read | Write | Flush | SetLength,
}

/// <summary>
/// One fault a <see cref="FaultInjectingDevice"/> injects: which operations it matches, which
/// of the matches it hits, and what it does to them (an errno, a delay, or both). Matches are
/// counted per rule, from 1, so "the 3rd write" means the 3rd write this rule has seen.
/// </summary>
public sealed record FaultRule
{
    /// <summary>Operations the rule looks at.</summary>
    public required FaultOperations Operations { get; init; }

    /// <summary>
    /// Start of the byte range a read or write must overlap to match. Flush and SetLength have
    /// no range, so a rule with a range never matches them.
    /// </summary>
    public long RangeStart { get; init; }

    /// <summary>End (exclusive) of the byte range; <see cref="long.MaxValue"/> means no range.</summary>
    public long RangeEnd { get; init; } = long.MaxValue;

    /// <summary>The first match (1-based) the rule hits.</summary>
    public long FirstMatch { get; init; } = 1;

    /// <summary>How many consecutive matches from <see cref="FirstMatch"/> it hits; null hits all of them.</summary>
    public long? HitCount { get; init; }

    /// <summary>Chance that a hit match is actually faulted (drawn from the device's seeded random).</summary>
    public double Probability { get; init; } = 1.0;

    /// <summary>The errno the faulted operation fails with; null makes the rule only slow it down.</summary>
    public int? Errno { get; init; } = Devices.Errno.EIO;

    /// <summary>Added latency for each faulted operation (slow disk, congested network filesystem).</summary>
    public TimeSpan Delay { get; init; }

    /// <summary>
    /// When true the operation reaches the inner device first and the error is reported after:
    /// a write that landed though the caller saw it fail, a flush that made data durable and
    /// still returned EIO. Code that "knows" a failed write left nothing behind is wrong here.
    /// </summary>
    public bool FailAfterInner { get; init; }

    internal bool HasRange => RangeStart > 0 || RangeEnd != long.MaxValue;

    /// <summary>Fails only the <paramref name="n"/>-th (1-based) matching operation.</summary>
    public static FaultRule FailNth(FaultOperations operations, long n, int errno = Devices.Errno.EIO) =>
        new() { Operations = operations, FirstMatch = n, HitCount = 1, Errno = errno };

    /// <summary>Fails the <paramref name="n"/>-th matching operation and every one after it (a dead disk, a full filesystem).</summary>
    public static FaultRule FailFrom(FaultOperations operations, long n, int errno = Devices.Errno.EIO) =>
        new() { Operations = operations, FirstMatch = n, Errno = errno };

    /// <summary>Fails every read or write that overlaps [<paramref name="offset"/>, <paramref name="offset"/> + <paramref name="length"/>) (a bad region).</summary>
    public static FaultRule FailRange(FaultOperations operations, long offset, long length, int errno = Devices.Errno.EIO) =>
        new() { Operations = operations, RangeStart = offset, RangeEnd = checked(offset + length), Errno = errno };

    /// <summary>Fails each matching operation with probability <paramref name="probability"/>.</summary>
    public static FaultRule FailRandomly(FaultOperations operations, double probability, int errno = Devices.Errno.EIO) =>
        new() { Operations = operations, Probability = probability, Errno = errno };

    /// <summary>Delays every matching operation by <paramref name="delay"/> without failing it.</summary>
    public static FaultRule Slow(FaultOperations operations, TimeSpan delay) =>
        new() { Operations = operations, Errno = null, Delay = delay };
}

/// <summary>How a <see cref="FaultInjectingDevice"/> behaves after a flush has failed.</summary>
public sealed record FaultInjectionOptions
{
    /// <summary>
    /// Every flush after a failed one fails too, with the same errno. This is the behaviour the
    /// engine must assume; turn it off to model the worse Linux reality ("fsyncgate"), where the
    /// next fsync succeeds although the data of the failed one never reached the disk.
    /// </summary>
    public bool StickyFlushFailure { get; init; } = true;

    /// <summary>After a failed flush, writes and length changes fail too (the filesystem went read-only).</summary>
    public bool FailWritesAfterFlushFailure { get; init; }

    /// <summary>
    /// When the inner device is a <see cref="CrashSimulatingDevice"/>, a flush that fails before
    /// reaching it drops its unsynced writes for good (Linux marks the failed pages clean), so a
    /// later crash shows the loss even if a later flush succeeds.
    /// </summary>
    public bool LoseUnsyncedWritesOnFlushFailure { get; init; } = true;

    /// <summary>Seed for <see cref="FaultRule.Probability"/> draws, so a failing run replays.</summary>
    public int Seed { get; init; }
}
