using Qcow2Actors.Chaos.Devices;
using Qcow2Actors.Chaos.Qcow2;
using Qcow2Actors.Chaos.Workloads;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Chaos.PowerLoss;

/// <summary>
/// One workload run of the engine on a <see cref="RecordingDisk"/>: the image spec and workload
/// a run seed gives, and every call the engine made on the image file (workload, then a clean
/// close, so crashes inside the closing checkpoint are states too).
/// </summary>
internal sealed class RecordedRun
{
    public required int Seed { get; init; }

    public required ChaosImageSpec Spec { get; init; }

    public required Workload Workload { get; init; }

    /// <summary>The image file before the run (created, closed, clean).</summary>
    public required byte[] InitialImage { get; init; }

    /// <summary>The guest content before the run (backing data, zeros elsewhere).</summary>
    public required byte[] InitialGuest { get; init; }

    public required IReadOnlyList<LoggedCall> Log { get; init; }

    /// <summary>The journal after the run's last call (null: none; a clean close removes it).</summary>
    public required byte[]? FinalJournal { get; init; }

    /// <summary>The backing file the image names (a real file in the run's directory), or null.</summary>
    public required string? BackingPath { get; init; }

    /// <summary>The spec a run seed gives: a random image (cluster size, refcount width, v2/v3, extended L2, backing) on a small disk.</summary>
    public static ChaosImageSpec SpecFor(int seed, long diskSize) => ChaosImageSpec.Random(new Random(seed), diskSize);

    /// <summary>
    /// Creates the run's image in <paramref name="dir"/>, runs the workload on it through
    /// <paramref name="hostFor"/>'s engine (a host per checkpoint setting) and closes it cleanly.
    /// </summary>
    public static async Task<RecordedRun> RecordAsync(int seed, long diskSize, int operations, string dir,
        Func<ChaosImageSpec, ImageHost> hostFor, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(dir);
        var spec = SpecFor(seed, diskSize);
        var shape = spec.WorkloadOptions(operations, maxLength: (int)Math.Min(64 * 1024, diskSize / 4));
        // A cluster bigger than the small disk: the workload aims at smaller units than the cluster then.
        var workload = Workload.Generate(seed, shape with { ClusterSize = (int)Math.Min(shape.ClusterSize, diskSize) });
        var path = Path.GetFullPath(Path.Combine(dir, "image.qcow2"));
        var backing = Path.Combine(dir, spec.Backing == BackingKind.Raw ? "backing.raw" : "backing.qcow2");
        var initialGuest = await spec.CreateAsync(path, backing, cancellationToken).ConfigureAwait(false);
        var initialImage = await File.ReadAllBytesAsync(path, cancellationToken).ConfigureAwait(false);
        // From here the image lives only in memory: nothing on the host file system to lock or to confuse with it.
        File.Delete(path);
        var completed = 0;
        var disk = new RecordingDisk(initialImage, path, path + ".journal", () => Volatile.Read(ref completed));
        var image = await hostFor(spec).OpenAsync(path, new Qcow2OpenOptions
        {
            ReadOnly = false,
            Format = "qcow2",
            DeviceFactory = (p, writable) => Path.GetFullPath(p) == path
                ? new SharedDeviceHandle(disk, readOnly: !writable)
                : ResilientBlockDevice.OpenFile(p, writable),
        }, cancellationToken).ConfigureAwait(false);
        await using (image.ConfigureAwait(false))
        {
            await using var target = new Qcow2ChaosTarget(image, ownsImage: false);
            foreach (var op in workload.Operations)
            {
                await WorkloadRunner.Execute(target, workload, op, cancellationToken).ConfigureAwait(false);
                Interlocked.Increment(ref completed);
            }
        }
        byte[]? finalJournal = File.Exists(path + ".journal") ? await File.ReadAllBytesAsync(path + ".journal", cancellationToken).ConfigureAwait(false) : null;
        return new RecordedRun
        {
            Seed = seed,
            Spec = spec,
            Workload = workload,
            InitialImage = initialImage,
            InitialGuest = initialGuest,
            Log = disk.Log,
            FinalJournal = finalJournal,
            BackingPath = spec.Backing == BackingKind.None ? null : Path.GetFullPath(backing),
        };
    }
}
