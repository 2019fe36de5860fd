namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>POST .../snapshots: takes an internal snapshot (of a served image too).</summary>
public sealed record SnapshotCreateRequest
{
    /// <summary>Snapshot name.</summary>
    public required string Name { get; init; }
}
