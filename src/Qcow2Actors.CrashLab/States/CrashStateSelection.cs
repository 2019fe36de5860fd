namespace Qcow2Actors.CrashLab.States;

/// <summary>The states chosen for a run.</summary>
/// <param name="States">The states, in the order they are tried.</param>
/// <param name="IsExhaustive">True when <paramref name="States"/> is every state of the space.</param>
/// <param name="Total">Every state of the space in exhaustive numbering (saturated at <see cref="long.MaxValue"/>).</param>
public sealed record CrashStateSelection(IReadOnlyList<CrashState> States, bool IsExhaustive, long Total);
