using Qcow2Actors.Chaos.Devices;
using Qcow2Actors.Chaos.Qcow2;
using Qcow2Actors.Chaos.Workloads;
using Qcow2Actors.Tests.Shared;
using Xunit.Abstractions;

namespace Qcow2Actors.Chaos.Tests;

/// <summary>
/// The write engine under power cuts: a workload with flushes runs on an image whose file is a
/// <see cref="CrashSimulatingDevice"/>; the power goes at several points of its I/O; each of a
/// handful of crash states per cut is written to a file beside the (real, fsynced) journal,
/// recovered by a fresh host (replay), verified against the <see cref="DiskModel"/>, closed and
/// judged by qemu-img.
/// </summary>
public class Qcow2CrashTests(ITestOutputHelper output)
{
    private const long DiskSize = 4 * 1024 * 1024;

    public static TheoryData<string> Specs => new() { "plain", "v2-raw-backing", "extl2-qcow2-backing" };

    private static ChaosImageSpec Spec(string name) => name switch
    {
        "plain" => new ChaosImageSpec { DiskSize = DiskSize },
        "v2-raw-backing" => new ChaosImageSpec
        {
            DiskSize = DiskSize, Version = 2, ClusterSize = 4096, Backing = BackingKind.Raw, BackingSize = DiskSize, BackingSeed = 3,
            CheckpointRecords = 64,
        },
        _ => new ChaosImageSpec
        {
            DiskSize = DiskSize, ClusterSize = 16384, ExtendedL2 = true, RefcountBits = 1, Backing = BackingKind.Qcow2,
            BackingSize = DiskSize / 2, BackingSeed = 4, CheckpointRecords = 8,
        },
    };

    [QemuTheory]
    [MemberData(nameof(Specs))]
    public async Task Every_flushed_write_survives_power_cuts_throughout_a_workload(string name)
    {
        var spec = Spec(name);
        using var dir = new TempDir();
        var basePath = dir.File("base.qcow2");
        var initial = await spec.CreateAsync(basePath, dir.File("backing.img"));
        var workload = Workload.Generate(name.Length * 7919, spec.WorkloadOptions(80, maxLength: 128 * 1024));

        // First run to the end with no cut: it counts the I/O, and the crash at its end is a cut too.
        var (mutations, states) = await RunAndCrashAsync(spec, workload, initial, basePath, dir, cut: null, name);
        var cuts = 1;
        for (var i = 1; i <= 7; i++)
        {
            var cut = mutations * i / 8;
            states += (await RunAndCrashAsync(spec, workload, initial, basePath, dir, cut, name)).States;
            cuts++;
        }
        output.WriteLine($"{name} ({spec}): {mutations} device mutations uncut, {cuts} cuts, {states} crash states recovered and verified");
        Assert.True(states >= cuts * 2, $"only {states} crash states");
    }

    private static async Task<(long Mutations, int States)> RunAndCrashAsync(ChaosImageSpec spec, Workload workload, byte[] initial,
        string basePath, TempDir dir, long? cut, string name)
    {
        var runDir = dir.File($"cut{cut?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "end"}");
        Directory.CreateDirectory(runDir);
        var path = Path.Combine(runDir, "image.qcow2");
        File.Copy(basePath, path);
        var model = new DiskModel(spec.DiskSize, initial);
        await using var engine = await EngineOnSimulatedDisk.OpenAsync(path, spec.EngineHocon());
        if (cut is { } n) engine.Disk.PowerCutAfter(n);
        var context = $"{name} ({spec}), power cut after {(cut is null ? "the whole workload" : $"{cut} mutations")}";
        try
        {
            await WorkloadRunner.RunAsync(new Qcow2ChaosTarget(engine.Image, ownsImage: false), workload, model);
        }
        catch (Exception e) when (engine.Disk.IsPoweredOff)
        {
            // The cut: the op in flight is recorded as interrupted; nothing after it ran.
            _ = e;
        }
        var mutations = engine.Counters.Mutations;
        var journal = await engine.CrashAsync();
        var states = await engine.VerifyCrashStatesAsync(journal, model, runDir, 8, new Random((int)(cut ?? 0)), context);
        Directory.Delete(runDir, recursive: true);
        return (mutations, states);
    }
}
