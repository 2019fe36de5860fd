namespace Qcow2Actors.Chaos.PowerLoss;

/// <summary>One crash state of a power-loss run: the image bytes and journal a power cut could leave, and the model they must satisfy.</summary>
internal sealed class CrashState
{
    public required int Index { get; init; }

    public required CrashStateKind Kind { get; init; }

    /// <summary>One line: the flush interval, the crash point, which calls survived and which were torn.</summary>
    public required string Description { get; init; }

    public required byte[]? Journal { get; init; }

    public required Workloads.DiskModel Model { get; init; }
}
