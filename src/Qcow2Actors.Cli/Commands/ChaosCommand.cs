using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Qcow2Actors.Chaos.Processes;
using Qcow2Actors.Chaos.Qcow2;
using Qcow2Actors.Chaos.Workloads;
using Qcow2Actors.Engine;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a chaos [--runs N] [--seed S] [--ops N] [--size SZ] [--keep] [DIR]</c>: crash-recovery
/// testing as a product. Each run creates an image with randomised options (cluster size,
/// refcount width, v2/v3, extended L2, backing file, checkpoint threshold), starts a child
/// process that runs a random workload on it, SIGKILLs the child at a random op, and then
/// demands: qemu-img refuses the crashed image naming our journal-pending feature or finds it
/// consistent; our read-write open replays and recovers it; every flushed write is there; after
/// a clean close qemu-img check is clean and QEMU reads what we read. One line per run, a
/// summary, exit 0 only if every run passed. Failed runs' directories are kept.
/// </summary>
internal static class ChaosCommand
{
    public static IEnumerable<Command> Create()
    {
        var runs = new Option<int>("--runs") { Description = "number of runs", DefaultValueFactory = _ => 20 };
        var seed = new Option<int?>("--seed") { Description = "seed of the whole session (default: random); a run's line names its own seed" };
        var ops = new Option<int>("--ops") { Description = "operations per workload", DefaultValueFactory = _ => 200 };
        var size = new Option<string>("--size") { Description = "virtual disk size (k/M/G suffixes)", DefaultValueFactory = _ => "16M" };
        var keep = new Option<bool>("--keep") { Description = "keep every run's directory, not only failed ones" };
        var dir = new Argument<string?>("dir") { Description = "where runs are written (default: a temporary directory)", Arity = ArgumentArity.ZeroOrOne };
        var powerLoss = new Option<bool>("--power-loss") { Description = "in process: enumerate crash states of simulated-disk runs (every flush prefix x dropped/reordered/torn unsynced writes), recover and check each" };
        var states = new Option<int>("--states") { Description = "--power-loss: crash states to check", DefaultValueFactory = _ => 100_000 };
        var perRun = new Option<int>("--states-per-run") { Description = "--power-loss: crash states taken from one workload run", DefaultValueFactory = _ => 2000 };
        var runSeed = new Option<int?>("--run-seed") { Description = "--power-loss: rebuild the one run a failure line names" };
        var state = new Option<int?>("--state") { Description = "--power-loss with --run-seed: check only this state of the run" };
        var workers = new Option<int>("--workers") { Description = "--power-loss: parallel workers", DefaultValueFactory = _ => Math.Max(1, 2 * Environment.ProcessorCount) };
        var qemuEvery = new Option<int>("--qemu-every") { Description = "--power-loss: also run qemu-img check on one state in N (0: never)", DefaultValueFactory = _ => 1000 };
        var output = new Option<string>("--output") { Description = "--power-loss: human or json", DefaultValueFactory = _ => "human" };
        // The harness's own test: a disk that forgets flushed writes must make the run fail.
        var dropFlushed = new Option<bool>("--drop-flushed-writes") { Hidden = true };
        var command = new Command("chaos", "crash a workload process at random points and prove every recovery; --power-loss: enumerate crash states in process")
        {
            runs, seed, ops, size, keep, dir, powerLoss, states, perRun, runSeed, state, workers, qemuEvery, output, dropFlushed,
        };
        command.SetAction((parse, ct) => CliRunner.RunAsync(() =>
        {
            if (!parse.GetValue(powerLoss))
                return RunAsync(parse.GetValue(runs), parse.GetValue(seed), parse.GetValue(ops), parse.GetValue(size)!, parse.GetValue(keep), parse.GetValue(dir), ct);
            var diskSize = 1024L * 1024;
            if (parse.GetResult(size) is { Implicit: false })
            {
                var text = parse.GetValue(size)!;
                if (QemuSize.TryParse(text, out var parsed) != QemuSizeError.None || parsed < 65536 || parsed > 64L * 1024 * 1024 || parsed % 512 != 0)
                    throw new CliException($"invalid --size '{text}': a multiple of 512 from 64k to 64M");
                diskSize = (long)parsed;
            }
            if (parse.GetValue(workers) < 1) throw new CliException("--workers must be at least 1");
            var options = new Chaos.PowerLoss.PowerLossOptions
            {
                States = parse.GetValue(states),
                StatesPerRun = parse.GetValue(perRun),
                Seed = parse.GetValue(seed) ?? Random.Shared.Next(),
                Operations = parse.GetResult(ops) is { Implicit: false } ? parse.GetValue(ops) : 60,
                DiskSize = diskSize,
                Workers = parse.GetValue(workers),
                QemuSampleEvery = QemuImg.IsAvailable ? Math.Max(0, parse.GetValue(qemuEvery)) : 0,
                WorkDirectory = parse.GetValue(dir),
                RunSeed = parse.GetValue(runSeed),
                StateIndex = parse.GetValue(state),
                DropFlushedWrites = parse.GetValue(dropFlushed),
            };
            if (options.Operations < 1) throw new CliException("--ops must be at least 1");
            return ChaosPowerLossCommand.RunAsync(options, Formats.IsJson(parse.GetValue(output)), ct);
        }));
        yield return command;
        yield return ChaosChildCommand.Create();
    }

    /// <summary>The image a run with <paramref name="seed"/> uses (parent and child derive it alike).</summary>
    internal static ChaosImageSpec SpecFor(int seed, long size) => ChaosImageSpec.Random(new Random(seed), size);

    /// <summary>The workload a run with <paramref name="seed"/> issues.</summary>
    internal static Workload WorkloadFor(int seed, ChaosImageSpec spec, int ops) => Workload.Generate(seed, spec.WorkloadOptions(ops));

    private static async Task<int> RunAsync(int runs, int? seed, int ops, string sizeText, bool keep, string? dir, CancellationToken ct)
    {
        if (runs < 1) throw new CliException("--runs must be at least 1");
        if (ops < 1) throw new CliException("--ops must be at least 1");
        if (QemuSize.TryParse(sizeText, out var parsed) != QemuSizeError.None || parsed < 65536 || parsed > 1024L * 1024 * 1024 || parsed % 512 != 0)
            throw new CliException($"invalid --size '{sizeText}': a multiple of 512 from 64k to 1G");
        var size = (long)parsed;
        if (!QemuImg.IsAvailable) throw new CliException("qemu-img is not on PATH (apt-get install qemu-utils): it is the judge of every run");
        var sessionSeed = seed ?? Random.Shared.Next();
        var session = new Random(sessionSeed);
        var ownDir = dir is null;
        var root = dir is null ? Directory.CreateTempSubdirectory("q2a-chaos-").FullName : Path.GetFullPath(dir);
        Directory.CreateDirectory(root);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"chaos: {runs} runs, seed {sessionSeed}, {ops} ops on {sizeText}, in {root}"));

        var stopwatch = Stopwatch.StartNew();
        int passed = 0, refused = 0, completedChildren = 0;
        var failed = new List<string>();
        await using var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s", "chaos-recovery");
        for (var r = 1; r <= runs; r++)
        {
            ct.ThrowIfCancellationRequested();
            var runSeed = session.Next();
            var runDir = Path.Combine(root, string.Create(CultureInfo.InvariantCulture, $"run-{r:D4}-{runSeed}"));
            var (ok, line, wasRefused, childCompleted) = await RunOnceAsync(runSeed, ops, size, runDir, host, ct).ConfigureAwait(false);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"run {r}/{runs} seed {runSeed}: {(ok ? "ok" : "FAIL")} {line}"));
            if (ok)
            {
                passed++;
                if (wasRefused) refused++;
                if (childCompleted) completedChildren++;
                if (!keep) Directory.Delete(runDir, recursive: true);
            }
            else
            {
                failed.Add($"seed {runSeed} ({runDir})");
            }
        }
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"chaos: {passed}/{runs} runs passed, {failed.Count} failed; {refused} crashed images refused by qemu-img (journal pending), {passed - refused} found clean; {completedChildren} children finished before the kill; {stopwatch.Elapsed.TotalSeconds:F0} s"));
        foreach (var f in failed) Console.WriteLine($"chaos: FAILED {f}");
        if (ownDir && failed.Count == 0 && !keep) Directory.Delete(root, recursive: true);
        return failed.Count == 0 ? 0 : 1;
    }

    private static async Task<(bool Ok, string Line, bool Refused, bool ChildCompleted)> RunOnceAsync(int seed, int ops, long size, string runDir,
        ImageHost host, CancellationToken ct)
    {
        Directory.CreateDirectory(runDir);
        var spec = SpecFor(seed, size);
        var workload = WorkloadFor(seed, spec, ops);
        var image = Path.Combine(runDir, "image.qcow2");
        byte[] initial;
        try
        {
            initial = await spec.CreateAsync(image, Path.Combine(runDir, spec.Backing == BackingKind.Raw ? "backing.raw" : "backing.qcow2"), ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            return (false, $"{spec}: creating the image failed: {e.Message}", false, false);
        }
        await File.WriteAllTextAsync(Path.Combine(runDir, "workload.qemu-io"), workload.ToQemuIoScript() + "\n", ct).ConfigureAwait(false);

        var rng = new Random(seed);
        var killAt = rng.Next(ops);
        var (fileName, args) = Self();
        var result = await ChildProcessCrashRunner.RunAsync(new ChildProcessOptions
        {
            FileName = fileName,
            Arguments = [.. args, "chaos-child", "--seed", Str(seed), "--ops", Str(ops), "--size", Str(size), image],
            KillWhenLine = line => line == ChaosProtocol.StartedLine(killAt),
            KillJitter = TimeSpan.FromMilliseconds(30),
            KillAfterMax = TimeSpan.FromMinutes(5),
            Timeout = TimeSpan.FromMinutes(6),
            Environment = new Dictionary<string, string?> { ["DOTNET_gcServer"] = "0" },
        }, rng, ct).ConfigureAwait(false);
        await File.WriteAllLinesAsync(Path.Combine(runDir, "child.log"), result.Lines, ct).ConfigureAwait(false);
        if (result.StandardError.Length > 0) await File.WriteAllTextAsync(Path.Combine(runDir, "child.err"), result.StandardError, ct).ConfigureAwait(false);
        var log = result.Log;
        var completed = result.Lines.Contains("END");
        var what = string.Create(CultureInfo.InvariantCulture,
            $"{spec}: {(result.Killed ? "killed" : $"exited {result.ExitCode}")} at op #{log.LastStarted} of {ops} ({log.Flushed.Count} flushes done, last #{log.LastFlushed})");
        if (!result.Killed && !(completed && result.ExitCode == 0))
            return (false, $"{what}: the child failed: {OneLine(result.StandardError)}", false, false);
        if (result.StandardError.Contains("Exception", StringComparison.Ordinal) || result.StandardError.Contains("q2a:", StringComparison.Ordinal))
            return (false, $"{what}: the child reported an error: {OneLine(result.StandardError)}", false, false);

        var model = DiskModel.FromLog(workload, log, initial);
        var verdict = await ChaosRecovery.RecoverAndVerifyAsync(host, image, model, ct).ConfigureAwait(false);
        return (verdict.Ok, $"{what}: {verdict}", verdict.RefusedByQemu, completed);
    }

    /// <summary>How to start this same q2a again: the apphost, or dotnet with q2a.dll.</summary>
    private static (string FileName, string[] Args) Self()
    {
        var process = Environment.ProcessPath ?? "dotnet";
        var dll = typeof(ChaosCommand).Assembly.Location;
        return Path.GetFileNameWithoutExtension(process) == "dotnet" ? (process, [dll]) : (process, []);
    }

    private static string Str(long value) => value.ToString(CultureInfo.InvariantCulture);

    private static string OneLine(string text)
    {
        var line = text.ReplaceLineEndings(" ").Trim();
        return line.Length <= 300 ? line : line[..300] + "...";
    }
}
