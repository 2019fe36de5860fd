using Qcow2Actors.CrashLab.States;

namespace Qcow2Actors.CrashLab.Check;

/// <summary>A state the checker rejected.</summary>
/// <param name="State">The state (its id rebuilds it).</param>
/// <param name="ExitCode">The checker's exit code (-1 when it was killed for running too long).</param>
/// <param name="Output">The end of its stdout and stderr.</param>
/// <param name="KeptImage">Where the state was kept (<see cref="CrashCheckOptions.KeepFailedDirectory"/>), or null.</param>
public sealed record CrashCheckFailure(CrashState State, int ExitCode, string Output, string? KeptImage);
