using System.Globalization;
using System.Text.Json;
using Qcow2Actors.Chaos.PowerLoss;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a chaos --power-loss [--states N] [--seed S] [--output json]</c>: the engine's own
/// workloads on a simulated disk, every crash state of each run recovered and checked in this
/// process (see <see cref="PowerLossSession"/>). One line per failing state naming the run seed
/// and state index (and the command that rebuilds it), a summary line, exit 1 on any failure.
/// </summary>
internal static class ChaosPowerLossCommand
{
    public static async Task<int> RunAsync(PowerLossOptions options, bool json, CancellationToken ct)
    {
        if (options.States < 1) throw new CliException("--states must be at least 1");
        if (options.StatesPerRun < 1) throw new CliException("--states-per-run must be at least 1");
        if (options.StateIndex is not null && options.RunSeed is null) throw new CliException("--state needs --run-seed (both are on a failure's line)");
        var what = options.RunSeed is { } rs
            ? $"run seed {rs}{(options.StateIndex is { } si ? $", state {si}" : "")}"
            : $"seed {options.Seed}";
        if (!json)
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"power-loss: up to {options.States} crash states, {what}, {options.StatesPerRun} per run, {options.Operations} ops on {options.DiskSize / 1024} KiB disks, {options.Workers} workers"));
        var gate = new Lock();
        var report = await PowerLossSession.RunAsync(options, failure =>
        {
            if (json) return;
            lock (gate) Console.WriteLine(FailureLine(failure, options));
        }, ct).ConfigureAwait(false);

        if (json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                states = report.States,
                failed = report.Failed,
                runs = report.Runs,
                seed = options.Seed,
                qemu_checked = report.QemuChecked,
                elapsed_seconds = Math.Round(report.Elapsed.TotalSeconds, 1),
                states_per_second = Math.Round(report.StatesPerSecond, 1),
                failures = report.Failures.Select(f => new
                {
                    run_seed = f.RunSeed,
                    state = f.State,
                    spec = f.Spec,
                    description = f.Description,
                    stage = f.Stage,
                    message = f.Message,
                    rebuild = Rebuild(f, options),
                }),
            }));
        }
        else
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"power-loss: {report.States} states, {report.Failed} failures, {report.Elapsed.TotalSeconds:F1} s, {report.StatesPerSecond:F0} states/s ({report.Runs} runs, {report.QemuChecked} also checked by qemu-img)"));
        }
        return report.Failed == 0 ? 0 : 1;
    }

    private static string FailureLine(PowerLossFailure f, PowerLossOptions options) =>
        string.Create(CultureInfo.InvariantCulture,
            $"FAIL run seed {f.RunSeed} state {f.State} ({f.Spec}): {f.Description}: {f.Stage}: {f.Message} -- rebuild: {Rebuild(f, options)}");

    private static string Rebuild(PowerLossFailure f, PowerLossOptions options) => string.Create(CultureInfo.InvariantCulture,
        $"q2a chaos --power-loss --run-seed {f.RunSeed}{(f.State >= 0 ? $" --state {f.State}" : "")} --states-per-run {options.StatesPerRun} --ops {options.Operations} --size {options.DiskSize}");
}
