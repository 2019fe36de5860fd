namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>
/// PUT /v1/limits/...: a throttle group with QEMU's throttle semantics; 0 or absent = unlimited.
/// The whole group is replaced (fields left out become unlimited).
/// </summary>
public sealed record LimitRequest
{
    /// <summary>Operations per second, reads and writes together.</summary>
    public long? Iops { get; init; }
    /// <summary>Bytes per second, reads and writes together.</summary>
    public long? Bps { get; init; }
    /// <summary>Read operations per second.</summary>
    public long? ReadIops { get; init; }
    /// <summary>Write operations per second.</summary>
    public long? WriteIops { get; init; }
    /// <summary>Read bytes per second.</summary>
    public long? ReadBps { get; init; }
    /// <summary>Write bytes per second.</summary>
    public long? WriteBps { get; init; }
    /// <summary>Operations per second allowed during a burst.</summary>
    public long? BurstIops { get; init; }
    /// <summary>Bytes per second allowed during a burst.</summary>
    public long? BurstBps { get; init; }
    /// <summary>How long a burst may last, in seconds (QEMU's default 1).</summary>
    public int? BurstSeconds { get; init; }
}
