using System.CommandLine;
using Qcow2Actors.Chaos.Qcow2;
using Qcow2Actors.Chaos.Workloads;
using Qcow2Actors.Engine;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a chaos-child --seed S --ops N --size BYTES IMG</c> (hidden): the process <c>q2a chaos</c>
/// SIGKILLs. It derives the image spec and the workload from the seed exactly as the parent does,
/// opens the image read-write and runs the workload, printing STARTED/DONE/FLUSHED lines; if it
/// gets to the end it prints END and exits without closing the image (a crash all the same).
/// </summary>
internal static class ChaosChildCommand
{
    public static Command Create()
    {
        var seed = new Option<int>("--seed") { Required = true };
        var ops = new Option<int>("--ops") { Required = true };
        var size = new Option<long>("--size") { Required = true };
        var path = new Argument<string>("filename");
        var command = new Command("chaos-child", "workload process of q2a chaos (internal)") { seed, ops, size, path };
        command.Hidden = true;
        command.SetAction((parse, ct) => CliRunner.RunAsync(() =>
            RunAsync(parse.GetValue(path)!, parse.GetValue(seed), parse.GetValue(ops), parse.GetValue(size), ct)));
        return command;
    }

    private static async Task<int> RunAsync(string path, int seed, int ops, long size, CancellationToken ct)
    {
        var spec = ChaosCommand.SpecFor(seed, size);
        var workload = ChaosCommand.WorkloadFor(seed, spec, ops);
#pragma warning disable CA2000 // Never disposed on purpose: the process exits with the image open, as a killed one would.
        var host = ImageHost.Create(spec.EngineHocon(checkpointTimer: spec.CheckpointRecords == 1024), "chaos-child");
#pragma warning restore CA2000
        var image = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false, Format = "qcow2" }, ct).ConfigureAwait(false);
        // ownsImage: false, so disposing the target leaves the image open.
        await using (var target = new Qcow2ChaosTarget(image, ownsImage: false))
            await WorkloadRunner.RunAsync(target, workload, protocol: Console.Out, cancellationToken: ct).ConfigureAwait(false);
        await Console.Out.WriteLineAsync("END").ConfigureAwait(false);
        await Console.Out.FlushAsync(ct).ConfigureAwait(false);
        // No close, no checkpoint: leave as a killed process would.
        Environment.Exit(0);
        return 0;
    }
}
