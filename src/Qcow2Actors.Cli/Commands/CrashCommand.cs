using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Qcow2Actors.CrashLab;
using Qcow2Actors.CrashLab.Check;
using Qcow2Actors.CrashLab.Materialize;
using Qcow2Actors.CrashLab.States;
using Qcow2Actors.Engine;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a crash states|check|state LOG ...</c>: the crash lab over a recording made by <c>q2a serve --record</c>.
/// <c>states</c> lists crash states, <c>check</c> runs the user's checker on each, <c>state</c> rebuilds one by id.
/// Exit codes: 0 done (every state passed), 1 a state failed (check), 2 could not run (bad log, missing image or
/// snapshot, bad option), with one line naming what.
/// </summary>
internal static class CrashCommand
{
    /// <summary>The "could not run" exit code.</summary>
    public const int CouldNotRun = 2;

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    public static Command Create()
    {
        var command = new Command("crash", "crash-recovery testing over a recording (q2a serve --record): list, check and rebuild crash states");
        command.Subcommands.Add(States());
        command.Subcommands.Add(Check());
        command.Subcommands.Add(State());
        return command;
    }

    private static Option<int> MaxStates() => new("--max-states") { Description = "most states to list or check; more than this are sampled (default 1000)", DefaultValueFactory = _ => 1000 };
    private static Option<int> Seed() => new("--seed") { Description = "seed of the sampling: the same seed gives the same states (default 1)", DefaultValueFactory = _ => 1 };
    private static Option<int> Sector() => new("--sector") { Description = "size writes tear at: 512 or 4096 (default 512)", DefaultValueFactory = _ => 512 };
    private static Option<string> Output() => new("--output") { Description = "human or json", DefaultValueFactory = _ => "human" };

    private static Command States()
    {
        var log = new Argument<string>("LOG");
        var maxStates = MaxStates();
        var seed = Seed();
        var sector = Sector();
        var output = Output();
        var command = new Command("states", "list the crash states of a recording: at every flush point, the durable prefix plus any subset of the unflushed writes, dropped or torn")
            { log, maxStates, seed, sector, output };
        command.SetAction(parse => Run(() =>
        {
            var json = Formats.IsJson(parse.GetValue(output));
            var space = Load(parse.GetValue(log)!, parse.GetValue(sector));
            var selection = space.Select(Positive(parse.GetValue(maxStates), "--max-states"), parse.GetValue(seed));
            if (json)
            {
                var o = Summary(space, selection);
                o["list"] = new JsonArray([.. selection.States.Select(StateJson)]);
                Console.Out.Write(o.ToJsonString(Indented) + "\n");
            }
            else
            {
                foreach (var s in selection.States)
                    Console.Out.Write($"{s.Id}\t{s.Describe()}\n");
                Console.Out.Write(string.Create(CultureInfo.InvariantCulture,
                    $"{selection.States.Count} states ({(selection.IsExhaustive ? "all" : $"sampled with seed {parse.GetValue(seed)} from {Count(selection.Total)}")}) at {space.Points.Count} crash points\n"));
            }

            return Task.FromResult(0);
        }));
        return command;
    }

    private static Command Check()
    {
        var log = new Argument<string>("LOG");
        var check = new Option<string>("--check") { Description = "checker command, run by /bin/sh once per state; exit 0 = pass. {image}: the state as a qcow2 overlay, {uri}: nbd+unix URI serving it read-only, {raw}: the state as a raw file", Required = true };
        var jobs = new Option<int>("--jobs", "-j") { Description = "states checked at once (default 1)", DefaultValueFactory = _ => 1 };
        var maxStates = MaxStates();
        var seed = Seed();
        var sector = Sector();
        var output = Output();
        var keepFailed = new Option<string?>("--keep-failed") { Description = "write every failing state to DIR as a standalone qcow2 image named after its id" };
        var timeout = new Option<int>("--timeout") { Description = "seconds a checker may run before it is killed and the state fails (default 600)", DefaultValueFactory = _ => 600 };
        var command = new Command("check", "run a checker against every crash state of a recording (exit 0 all pass, 1 some fail, 2 could not run)")
            { log, check, jobs, maxStates, seed, sector, output, keepFailed, timeout };
        command.SetAction((parse, ct) => Run(async () =>
        {
            var json = Formats.IsJson(parse.GetValue(output));
            var checker = parse.GetValue(check)!;
            if (!checker.Contains("{image}", StringComparison.Ordinal) && !checker.Contains("{uri}", StringComparison.Ordinal)
                && !checker.Contains("{raw}", StringComparison.Ordinal))
                throw new CliException("--check must name the state with {image}, {uri} or {raw}");
            var logPath = Path.GetFullPath(parse.GetValue(log)!);
            var sectorSize = parse.GetValue(sector);
            var space = Load(logPath, sectorSize);
            var selection = space.Select(Positive(parse.GetValue(maxStates), "--max-states"), parse.GetValue(seed));
            var options = new CrashCheckOptions
            {
                Command = checker,
                Jobs = Positive(parse.GetValue(jobs), "--jobs"),
                Timeout = TimeSpan.FromSeconds(Positive(parse.GetValue(timeout), "--timeout")),
                KeepFailedDirectory = parse.GetValue(keepFailed),
            };
            var bar = Console.IsErrorRedirected ? null : new ProgressBar(selection.States.Count);
            await using var host = ImageHost.Create();
            var report = await CrashChecker.RunAsync(host, space, selection.States, options, bar, ct);
            bar?.Finish();
            var rate = report.States / Math.Max(report.Elapsed.TotalSeconds, 1e-6);
            if (json)
            {
                var o = Summary(space, selection);
                o["failed"] = report.Failed.Count;
                o["seconds"] = Math.Round(report.Elapsed.TotalSeconds, 3);
                o["statesPerSecond"] = Math.Round(rate, 2);
                o["failures"] = new JsonArray([.. report.Failed.Select(f =>
                {
                    var s = StateJson(f.State);
                    s["exitCode"] = f.ExitCode;
                    s["output"] = f.Output;
                    s["rebuild"] = Rebuild(logPath, f.State, sectorSize);
                    if (f.KeptImage is not null) s["kept"] = f.KeptImage;
                    return (JsonNode)s;
                })]);
                Console.Out.Write(o.ToJsonString(Indented) + "\n");
            }
            else
            {
                foreach (var f in report.Failed)
                {
                    Console.Out.Write($"FAILED {f.State.Id}: {f.State.Describe()}\n");
                    Console.Out.Write($"  checker exit {f.ExitCode}\n");
                    foreach (var line in f.Output.Split('\n').TakeLast(20))
                        Console.Out.Write($"  | {line}\n");
                    Console.Out.Write($"  rebuild: {Rebuild(logPath, f.State, sectorSize)}\n");
                    if (f.KeptImage is not null) Console.Out.Write($"  kept: {f.KeptImage}\n");
                }

                Console.Out.Write(string.Create(CultureInfo.InvariantCulture,
                    $"{report.States} states checked ({(selection.IsExhaustive ? "all" : $"sampled with seed {parse.GetValue(seed)} from {Count(selection.Total)}")}), {report.Failed.Count} failed, {report.Elapsed.TotalSeconds:F1} s ({rate:F1} states/s)\n"));
            }

            return report.Failed.Count == 0 ? 0 : 1;
        }));
        return command;
    }

    private static Command State()
    {
        var log = new Argument<string>("LOG");
        var id = new Option<string>("--id") { Description = "id of the state (from crash states or crash check)", Required = true };
        var target = new Option<string>("-o") { Description = "file to write the state to (must not exist)", Required = true };
        var format = new Option<string>("-O") { Description = "qcow2 (one standalone image, default) or raw", DefaultValueFactory = _ => "qcow2" };
        var sector = Sector();
        var command = new Command("state", "rebuild one crash state as an image, by its id") { log, id, target, format, sector };
        command.SetAction((parse, ct) => Run(async () =>
        {
            var kind = parse.GetValue(format) switch
            {
                "qcow2" => CrashStateImageFormat.Standalone,
                "raw" => CrashStateImageFormat.Raw,
                var other => throw new CliException($"-O must be qcow2 or raw, not '{other}'"),
            };
            var space = Load(parse.GetValue(log)!, parse.GetValue(sector));
            CrashState state;
            try
            {
                state = space.Resolve(parse.GetValue(id)!);
            }
            catch (FormatException e)
            {
                throw new CliException(e.Message);
            }

            var output = parse.GetValue(target)!;
            if (File.Exists(output))
                throw new CliException($"-o {output}: the file exists; the state is written to a new file");
            await using var host = ImageHost.Create();
            var work = Directory.CreateTempSubdirectory("q2a-crash-").FullName;
            try
            {
                using var baseImage = await CrashBase.ExtractAsync(host, space.Log.Header, Path.Combine(work, "base.raw"), ct);
                await CrashStateWriter.WriteAsync(host, baseImage, CrashStateDelta.Build(state, baseImage), output, kind, ct);
            }
            finally
            {
                Directory.Delete(work, recursive: true);
            }

            Console.Out.Write($"{output}: {state.Id}: {state.Describe()}\n");
            return 0;
        }));
        return command;
    }

    /// <summary>One command line that rebuilds <paramref name="state"/> for debugging.</summary>
    internal static string Rebuild(string logPath, CrashState state, int sectorSize) =>
        $"q2a crash state {Quote(logPath)} --id {state.Id}{(sectorSize == 512 ? "" : $" --sector {sectorSize}")} -o {state.Id}.qcow2";

    private static string Quote(string value) =>
        value.All(c => char.IsAsciiLetterOrDigit(c) || "/._-+:=@".Contains(c)) ? value : "'" + value.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    private static CrashStateSpace Load(string path, int sectorSize)
    {
        if (sectorSize is not (512 or 4096))
            throw new CliException($"--sector must be 512 or 4096, not {sectorSize}");
        var log = CrashLogReader.Read(path);
        if (log.Truncation is { } truncation)
            Console.Error.Write($"q2a: warning: {truncation}; using the {log.Records.Count} whole records before it\n");
        return CrashStateSpace.Build(log, sectorSize);
    }

    private static int Positive(int value, string option) =>
        value > 0 ? value : throw new CliException($"{option} must be at least 1, not {value}");

    private static string Count(long total) => total == long.MaxValue ? "more than 9.2e18" : total.ToString(CultureInfo.InvariantCulture);

    private static JsonObject Summary(CrashStateSpace space, CrashStateSelection selection) => new()
    {
        ["image"] = space.Log.Header.ImagePath,
        ["snapshot"] = space.Log.Header.BaseSnapshot,
        ["sector"] = space.SectorSize,
        ["points"] = space.Points.Count,
        ["exhaustive"] = selection.IsExhaustive,
        ["total"] = selection.Total,
        ["states"] = selection.States.Count,
        ["truncated"] = space.Log.IsTruncated,
    };

    private static JsonObject StateJson(CrashState s) => new()
    {
        ["id"] = s.Id,
        ["epoch"] = s.Epoch,
        ["durable"] = s.Point.Durable.Count,
        ["kept"] = new JsonArray([.. s.Kept.Select(k => (JsonNode)k)]),
        ["dropped"] = new JsonArray([.. s.Dropped.Select(k => (JsonNode)k)]),
        ["torn"] = new JsonArray([.. s.Torn.Select(t => (JsonNode)new JsonObject { ["id"] = t.Operation.Id, ["sectorsKept"] = t.SectorsKept, ["sectors"] = t.Sectors })]),
        ["description"] = s.Describe(),
    };

    // Exit 2 (could not run) for every error, unlike CliRunner's 1: 1 means "a state failed" here.
    private static async Task<int> Run(Func<Task<int>> body)
    {
        try
        {
            return await body();
        }
        catch (Exception ex) when (ex is CliException or CrashLabException or InvalidDataException or FileNotFoundException
                                       or IOException or ArgumentException or UnauthorizedAccessException)
        {
            await Console.Error.WriteLineAsync($"q2a: {ex.Message.ReplaceLineEndings(" ")}");
            if (Environment.GetEnvironmentVariable("Q2A_DEBUG") == "1")
                await Console.Error.WriteLineAsync(ex.ToString());
            return CouldNotRun;
        }
    }

    /// <summary>A one-line bar on stderr, redrawn in place, when stderr is a terminal.</summary>
    private sealed class ProgressBar(int total) : IProgress<(int Checked, int Failed)>
    {
        private const int Width = 30;
        private readonly Lock _gate = new();

        public void Report((int Checked, int Failed) value)
        {
            lock (_gate)
            {
                var filled = total == 0 ? Width : value.Checked * Width / total;
                Console.Error.Write(string.Create(CultureInfo.InvariantCulture,
                    $"\r[{new string('#', filled)}{new string('.', Width - filled)}] {value.Checked}/{total} states, {value.Failed} failed"));
            }
        }

        public void Finish()
        {
            lock (_gate)
                Console.Error.Write("\n");
        }
    }
}
