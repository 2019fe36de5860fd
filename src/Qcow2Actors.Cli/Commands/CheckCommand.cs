using System.CommandLine;
using System.Globalization;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Check;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Info;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a check [-f qcow2] [-r leaks|all] [--output human|json] IMG</c>: qemu-img check's messages,
/// JSON keys and exit codes (0 clean, or clean after repair; 1 check failed; 2 corruptions; 3 leaks only).
/// A journal-pending image is checked as <c>q2a recover</c> will leave it; with <c>-r</c> it is recovered first.
/// </summary>
internal static class CheckCommand
{
    public static Command Create()
    {
        var format = new Option<string>("-f", "--format") { Description = "image format (only qcow2)" };
        var output = new Option<string>("--output") { Description = "human or json", DefaultValueFactory = _ => "human" };
        var repair = new Option<string?>("-r") { Description = "repair: 'leaks' (lower refcounts above their references) or 'all' (also corruptions)" };
        var forceShare = ForceShareOption.Create();
        var file = new Argument<string>("filename") { Description = "the image" };
        var command = new Command("check", "check the image's metadata for consistency; with -r, repair it");
        command.Options.Add(format);
        command.Options.Add(repair);
        command.Options.Add(output);
        command.Options.Add(forceShare);
        command.Arguments.Add(file);
        var sources = Sources.SourceOptions.AddTo(command);
        command.SetAction((ParseResult parse, CancellationToken ct) => CliRunner.RunAsync(async () =>
        {
            var spec = sources.Resolve(parse, parse.GetValue(file)!, parse.GetValue(format));
            var json = Formats.IsJson(parse.GetValue(output));
            if (!spec.IsHostFile)
            {
                var checkedOnDevice = await Sources.DeviceCheck.RunAsync(spec, parse.GetValue(repair) is not null, Console.Error, ct).ConfigureAwait(false);
                return checkedOnDevice is null ? Sources.DeviceCheck.NotSupportedExitCode : Report(checkedOnDevice, json);
            }
            var path = spec.Path!;
            Formats.RequireQcow2(spec.Format);
            RefuseMissingBacking(path, parse.GetValue(forceShare));
            // Said on stderr under --output json, so stdout stays one JSON document.
            var note = json ? Console.Error : Console.Out;
            bool pending = File.Exists(path) && PendingJournal.IsPending(path);
            if (parse.GetValue(repair) is { } r)
            {
                if (parse.GetValue(forceShare))
                    throw new ArgumentException($"Could not open '{path}': force-share=on can only be used with read-only images");
                var mode = ParseMode(r);
                // Repairing takes write access: recover first (replay, clean close), as `q2a recover` does;
                // an image also marked corrupt (which recover refuses) gets its journal replayed, then repaired.
                if (pending && PendingJournal.ReplayIntoCorruptImage(path))
                    await note.WriteLineAsync($"Replayed the pending journal of '{path}', which is marked corrupt; repairing it").ConfigureAwait(false);
                else if (pending)
                    await RecoverCommand.RunAsync(path, rebuild: false, note, ct).ConfigureAwait(false);
                return Repair(path, mode, json);
            }
            CheckResult result;
            try
            {
                result = ImageChecker.CheckFile(path, parse.GetValue(forceShare));
            }
            catch (Exception e) when (e is not FileNotFoundException and not ImageLockException)
            {
                throw new InvalidOperationException($"Could not open '{path}': {e.Message}", e);
            }
            if (pending)
                await note.WriteLineAsync($"'{path}' has a journal pending: checked as 'q2a recover' will leave it (nothing was written)")
                    .ConfigureAwait(false);
            return Report(result, json);
        }));
        return command;
    }

    // qemu-img check opens the backing chain and fails when a backing file is missing; the check itself reads only the image.
    private static void RefuseMissingBacking(string path, bool forceShare)
    {
        if (!File.Exists(path)) return;
        string? backing;
        try
        {
            backing = Engine.Info.ImageInfo.ReadChain(path, backingChain: false, forceShare)[0].FullBackingFilename;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return; // the check reports what is wrong with the image itself
        }
        if (backing is null || backing.StartsWith("json:", StringComparison.Ordinal) || backing.Contains("://", StringComparison.Ordinal)) return;
        if (!File.Exists(backing))
            throw new FileNotFoundException($"Could not open '{path}': Could not open backing file: Could not open '{backing}': No such file or directory", backing);
    }

    private static int Report(CheckResult result, bool json)
    {
        foreach (var line in result.Messages) Console.Error.WriteLine(line);
        if (result.AbortReason is null)
            Console.Out.Write(json ? Json(result).ToJson() + "\n" : Human(result));
        if (result.ExitCode == 1)
            Console.Error.WriteLine(result.AbortReason is null ? "q2a: Check failed" : $"q2a: Check failed: {result.AbortReason}");
        return result.ExitCode;
    }

    private static RepairMode ParseMode(string value) => value switch
    {
        "leaks" => RepairMode.Leaks,
        "all" => RepairMode.All,
        _ => throw new ArgumentException($"Unknown option value for -r (expecting 'leaks' or 'all'): {value}"),
    };

    private static int Repair(string path, RepairMode mode, bool json)
    {
        RepairResult result;
        try
        {
            // A repair writes: it takes the write lock, as qemu-img check -r does.
            using var imageLock = ImageLock.Acquire(path, LockMode.Writer);
            using var device = FileBlockDevice.Open(path, writable: true);
            result = ImageRepair.Repair(device, path, mode);
        }
        catch (Exception e) when (e is not FileNotFoundException and not ImageLockException)
        {
            throw new InvalidOperationException($"Could not open '{path}': {e.Message}", e);
        }
        foreach (var line in result.Messages) Console.Error.WriteLine(line);
        if (result.FailureReason is not null)
        {
            Console.Error.WriteLine($"q2a: Check failed: {result.FailureReason}");
            return 1;
        }
        var after = result.After;
        if (result.AnythingFixed)
        {
            // qemu-img reports the fixes, then checks again read-only and prints that check.
            if (!json)
            {
                Console.Out.Write(string.Create(CultureInfo.InvariantCulture,
                    $"The following inconsistencies were found and repaired:\n\n    {result.LeaksFixed} leaked clusters\n    {result.CorruptionsFixed} corruptions\n\nDouble checking the fixed image now...\n"));
            }
            foreach (var line in after.Messages) Console.Error.WriteLine(line);
        }
        if (after.AbortReason is null)
            Console.Out.Write(json ? Json(after, result.CorruptionsFixed, result.LeaksFixed).ToJson() + "\n" : Human(after));
        if (after.ExitCode == 1)
            Console.Error.WriteLine(after.AbortReason is null ? "q2a: Check failed" : $"q2a: Check failed: {after.AbortReason}");
        return result.ExitCode;
    }

    private static QemuJsonObject Json(CheckResult r, long corruptionsFixed = 0, long leaksFixed = 0)
    {
        // qemu-img leaves out every count that is 0, except check-errors.
        var o = new QemuJsonObject();
        if (r.ImageEndOffset != 0) o.Add("image-end-offset", r.ImageEndOffset);
        if (r.TotalClusters != 0) o.Add("total-clusters", r.TotalClusters);
        o.Add("check-errors", r.CheckErrors);
        if (r.Corruptions != 0) o.Add("corruptions", r.Corruptions);
        if (r.Leaks != 0) o.Add("leaks", r.Leaks);
        if (corruptionsFixed != 0) o.Add("corruptions-fixed", corruptionsFixed);
        if (leaksFixed != 0) o.Add("leaks-fixed", leaksFixed);
        if (r.AllocatedClusters != 0) o.Add("allocated-clusters", r.AllocatedClusters);
        if (r.FragmentedClusters != 0) o.Add("fragmented-clusters", r.FragmentedClusters);
        if (r.CompressedClusters != 0) o.Add("compressed-clusters", r.CompressedClusters);
        return o.Add("filename", r.Filename).Add("format", "qcow2");
    }

    private static string Human(CheckResult r)
    {
        var inv = CultureInfo.InvariantCulture;
        var s = "";
        if (r.Corruptions == 0 && r.Leaks == 0 && r.CheckErrors == 0)
        {
            s += "No errors were found on the image.\n";
        }
        else
        {
            if (r.Corruptions != 0)
                s += string.Create(inv, $"\n{r.Corruptions} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n");
            if (r.Leaks != 0)
                s += string.Create(inv, $"\n{r.Leaks} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n");
            if (r.CheckErrors != 0)
                s += string.Create(inv, $"\n{r.CheckErrors} internal errors have occurred during the check.\n");
        }
        if (r.TotalClusters != 0 && r.AllocatedClusters != 0)
        {
            s += string.Create(inv, $"{r.AllocatedClusters}/{r.TotalClusters} = {r.AllocatedClusters * 100.0 / r.TotalClusters:F2}% allocated, "
                + $"{r.FragmentedClusters * 100.0 / r.AllocatedClusters:F2}% fragmented, {r.CompressedClusters * 100.0 / r.AllocatedClusters:F2}% compressed clusters\n");
        }
        if (r.ImageEndOffset != 0) s += string.Create(inv, $"Image end offset: {r.ImageEndOffset}\n");
        return s;
    }
}
