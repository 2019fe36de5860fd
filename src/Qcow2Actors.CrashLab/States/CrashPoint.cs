namespace Qcow2Actors.CrashLab.States;

/// <summary>
/// A moment the power may be cut: just before a flush or FUA write is logged complete, or at the end of the log.
/// Everything in <see cref="Durable"/> is on the disk whatever happens; each of <see cref="Volatile"/> may be there,
/// missing, or torn.
/// </summary>
/// <param name="Index">Number of the point (0, 1, ...): the first part of a state id.</param>
/// <param name="Epoch">Flushes that completed before the point.</param>
/// <param name="LogPosition">Records of the log that happened before the cut.</param>
/// <param name="Durable">Writes, zeroes and trims the disk contract makes durable at the point, in issue order.</param>
/// <param name="Volatile">Writes, zeroes and trims issued before the point that are not durable, in issue order.</param>
public sealed record CrashPoint(
    int Index,
    int Epoch,
    int LogPosition,
    IReadOnlyList<CrashLogOperation> Durable,
    IReadOnlyList<CrashLogOperation> Volatile);
