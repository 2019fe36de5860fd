namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>An internal snapshot, as <c>qemu-img snapshot -l</c> lists it.</summary>
public sealed record SnapshotReply
{
    /// <summary>Snapshot id.</summary>
    public required string Id { get; init; }
    /// <summary>Snapshot name.</summary>
    public required string Name { get; init; }
    /// <summary>VM state bytes saved with it.</summary>
    public long VmStateSize { get; init; }
    /// <summary>When it was taken.</summary>
    public DateTimeOffset Date { get; init; }
    /// <summary>Guest clock at the snapshot, as qemu-img prints it (HH:MM:SS.mmm).</summary>
    public required string VmClock { get; init; }
    /// <summary>Instruction count, when recorded.</summary>
    public long? Icount { get; init; }
}
