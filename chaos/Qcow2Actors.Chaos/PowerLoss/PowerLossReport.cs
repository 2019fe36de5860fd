namespace Qcow2Actors.Chaos.PowerLoss;

/// <summary>A crash state that failed a check, with what rebuilds it.</summary>
/// <param name="RunSeed">The run's seed (image spec and workload derive from it).</param>
/// <param name="State">The state's index within the run.</param>
/// <param name="Spec">The run's image spec, one line.</param>
/// <param name="Description">Which calls survived, were dropped, reordered or torn.</param>
/// <param name="Stage">The failing check: "open", "verify", "close", "check", "qemu-check", "record" or "timeout".</param>
/// <param name="Message">What the check saw, one line.</param>
public sealed record PowerLossFailure(int RunSeed, int State, string Spec, string Description, string Stage, string Message);

/// <summary>The outcome of a power-loss session.</summary>
public sealed record PowerLossReport
{
    /// <summary>Crash states recovered and checked.</summary>
    public required long States { get; init; }

    /// <summary>States that failed a check (plus runs whose recording failed).</summary>
    public required long Failed { get; init; }

    /// <summary>Workload runs recorded.</summary>
    public required int Runs { get; init; }

    /// <summary>States also judged by qemu-img check.</summary>
    public required long QemuChecked { get; init; }

    /// <summary>Wall time.</summary>
    public required TimeSpan Elapsed { get; init; }

    /// <summary>The failures (the first 1000).</summary>
    public required IReadOnlyList<PowerLossFailure> Failures { get; init; }

    /// <summary>States per second of wall time.</summary>
    public double StatesPerSecond => Elapsed.TotalSeconds > 0 ? States / Elapsed.TotalSeconds : 0;
}
