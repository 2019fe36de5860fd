namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>A throttle group in force.</summary>
public sealed record LimitReply
{
    /// <summary>Export or tenant.</summary>
    public required LimitScope Scope { get; init; }
    /// <summary>Export name or tenant name.</summary>
    public required string Target { get; init; }
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
    /// <summary>How long a burst may last, in seconds.</summary>
    public int? BurstSeconds { get; init; }
}
