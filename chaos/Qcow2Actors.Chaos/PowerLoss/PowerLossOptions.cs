namespace Qcow2Actors.Chaos.PowerLoss;

/// <summary>What <see cref="PowerLossSession"/> runs.</summary>
public sealed record PowerLossOptions
{
    /// <summary>Crash states to recover and check in all (the last run stops early when they are reached).</summary>
    public int States { get; init; } = 100_000;

    /// <summary>Seed of the session: each run's seed derives from it.</summary>
    public int Seed { get; init; }

    /// <summary>Crash states taken from one run's log (the same value rebuilds the same states).</summary>
    public int StatesPerRun { get; init; } = 2000;

    /// <summary>Guest size of each run's image (small: every state copies the image).</summary>
    public long DiskSize { get; init; } = 1024 * 1024;

    /// <summary>Workload operations per run.</summary>
    public int Operations { get; init; } = 60;

    /// <summary>
    /// Runs recovering states in parallel. Two per core: a state spends much of its time waiting on
    /// actor and I/O-thread hand-offs, and a second run per core fills that (2 cores: 91 → 110 states/s).
    /// </summary>
    public int Workers { get; init; } = Math.Max(1, 2 * Environment.ProcessorCount);

    /// <summary>One state in this many is also judged by <c>qemu-img check</c> (0: none).</summary>
    public int QemuSampleEvery { get; init; } = 1000;

    /// <summary>Where runs and states are written (small files: a tmpfs is best); null: a temporary directory.</summary>
    public string? WorkDirectory { get; init; }

    /// <summary>Rebuild one run only (its seed, as a failure line names it) instead of deriving runs from <see cref="Seed"/>.</summary>
    public int? RunSeed { get; init; }

    /// <summary>With <see cref="RunSeed"/>: check only this state of the run (as a failure line names it).</summary>
    public int? StateIndex { get; init; }

    /// <summary>
    /// A broken disk, for the harness's own test: each flush forgets the first write it should
    /// have made durable. Every honest check must then find failures.
    /// </summary>
    public bool DropFlushedWrites { get; init; }
}
