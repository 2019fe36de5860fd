using System.Diagnostics;
using Qcow2Actors.Chaos.Qcow2;
using Qcow2Actors.Engine;

namespace Qcow2Actors.Chaos.PowerLoss;

/// <summary>
/// The engine under power cuts at scale, in one process: runs workloads on a recording disk
/// (random image specs), turns each run's call log into crash states (every flush interval, every
/// crash point in it, the unsynced calls dropped, reordered and torn at 512 B and 4 KiB), and
/// recovers and checks every state with one shared engine, one run per worker in parallel.
/// </summary>
public static class PowerLossSession
{
    private const int MaxFailuresKept = 1000;

    /// <summary>The seed of run <paramref name="run"/> of a session seeded <paramref name="seed"/>.</summary>
    public static int RunSeed(int seed, int run) => new Random(unchecked(seed * 1_000_003 + run)).Next();

    /// <summary>Runs the session; <paramref name="onFailure"/> sees each failure as it is found (from any worker, serialized).</summary>
    public static async Task<PowerLossReport> RunAsync(PowerLossOptions options, Action<PowerLossFailure>? onFailure = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.States, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.StatesPerRun, 1);
        var stopwatch = Stopwatch.StartNew();
        var ownDir = options.WorkDirectory is null;
        var root = options.WorkDirectory is { } d ? Path.GetFullPath(d) : Directory.CreateTempSubdirectory("q2a-power-loss-").FullName;
        Directory.CreateDirectory(root);

        var hosts = new Dictionary<int, ImageHost>();
        var hostsGate = new Lock();
        ImageHost HostFor(ChaosImageSpec spec)
        {
            lock (hostsGate)
            {
                if (!hosts.TryGetValue(spec.CheckpointRecords, out var host))
                    hosts[spec.CheckpointRecords] = host = ImageHost.Create(spec.EngineHocon(), $"power-loss-{spec.CheckpointRecords}");
                return host;
            }
        }

        var recovery = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s", "power-loss-recovery");
        long states = 0, failed = 0, qemuChecked = 0, reserved = 0;
        var runs = 0;
        var nextRun = 0;
        var failures = new List<PowerLossFailure>();
        var failuresGate = new Lock();
        void Fail(PowerLossFailure failure)
        {
            lock (failuresGate)
            {
                failed++;
                if (failures.Count < MaxFailuresKept) failures.Add(failure);
                onFailure?.Invoke(failure);
            }
        }

        async Task Worker(int w)
        {
            var bench = new StateRecovery(recovery, Directory.CreateDirectory(Path.Combine(root, $"worker{w}")).FullName);
            while (!cancellationToken.IsCancellationRequested)
            {
                var runIndex = Interlocked.Increment(ref nextRun) - 1;
                if (options.RunSeed is not null && runIndex > 0) return;
                if (Interlocked.Read(ref reserved) >= options.States) return;
                var seed = options.RunSeed ?? RunSeed(options.Seed, runIndex);
                var runDir = Path.Combine(root, $"run{runIndex}-{seed}");
                RecordedRun run;
                try
                {
                    run = await RecordedRun.RecordAsync(seed, options.DiskSize, options.Operations, runDir, HostFor, cancellationToken).ConfigureAwait(false);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    Fail(new PowerLossFailure(seed, -1, RecordedRun.SpecFor(seed, options.DiskSize).ToString(), "the workload run itself", "record",
                        $"{e.GetType().Name}: {e.Message.ReplaceLineEndings(" ")}"));
                    continue;
                }
                Interlocked.Increment(ref runs);
                var spec = run.Spec.ToString();
                var enumerator = new CrashStateEnumerator(run, options.StatesPerRun, seed);
                foreach (var state in enumerator.Enumerate(bench.Device, options.DropFlushedWrites))
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    if (options.StateIndex is { } only && state.Index != only) continue;
                    var ticket = Interlocked.Increment(ref reserved);
                    if (ticket > options.States) break;
                    var qemu = options.QemuSampleEvery > 0 && ticket % options.QemuSampleEvery == 1 % options.QemuSampleEvery;
                    var verdict = await bench.RecoverAsync(state, qemu, cancellationToken).ConfigureAwait(false);
                    Interlocked.Increment(ref states);
                    if (qemu) Interlocked.Increment(ref qemuChecked);
                    if (verdict is { } v) Fail(new PowerLossFailure(seed, state.Index, spec, state.Description, v.Stage, v.Message));
                }
                Directory.Delete(runDir, recursive: true);
            }
        }

        try
        {
            var workers = Enumerable.Range(0, options.RunSeed is null ? Math.Max(1, options.Workers) : 1)
                .Select(w => Task.Run(() => Worker(w), cancellationToken)).ToArray();
            await Task.WhenAll(workers).ConfigureAwait(false);
        }
        finally
        {
            await recovery.DisposeAsync().ConfigureAwait(false);
            foreach (var host in hosts.Values) await host.DisposeAsync().ConfigureAwait(false);
            if (ownDir) Directory.Delete(root, recursive: true);
        }
        return new PowerLossReport
        {
            States = states,
            Failed = failed,
            Runs = runs,
            QemuChecked = qemuChecked,
            Elapsed = stopwatch.Elapsed,
            Failures = failures,
        };
    }
}
