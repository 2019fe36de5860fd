namespace Qcow2Actors.CrashLab.Check;

/// <summary>What a check run found.</summary>
/// <param name="States">States checked.</param>
/// <param name="Failed">States the checker rejected, in the order the states were listed.</param>
/// <param name="Elapsed">Wall time of the run, base extraction included.</param>
public sealed record CrashCheckReport(int States, IReadOnlyList<CrashCheckFailure> Failed, TimeSpan Elapsed);
