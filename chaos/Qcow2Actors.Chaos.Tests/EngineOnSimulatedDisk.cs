using Qcow2Actors.Chaos.Devices;
using Qcow2Actors.Chaos.Qcow2;
using Qcow2Actors.Chaos.Workloads;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Chaos.Tests;

/// <summary>
/// The write engine running one image on a simulated disk (its journal stays a real, fsynced
/// file beside the image path): open, crash, and hand each crash state to <see cref="ChaosRecovery"/>.
/// </summary>
internal sealed class EngineOnSimulatedDisk : IAsyncDisposable
{
    private readonly string _path;
    private ImageHost? _host;

    private EngineOnSimulatedDisk(string path, CrashSimulatingDevice disk, IBlockDevice top, DeviceCallCounters counters, ImageHost host, Qcow2Image image)
    {
        _path = path;
        Counters = counters;
        Disk = disk;
        Top = top;
        _host = host;
        Image = image;
    }

    /// <summary>The simulated disk holding the image file.</summary>
    public CrashSimulatingDevice Disk { get; }

    /// <summary>What the engine's handles write through (the disk, or a fault injector over it).</summary>
    public IBlockDevice Top { get; }

    /// <summary>Calls the engine made on the image file.</summary>
    public DeviceCallCounters Counters { get; }

    /// <summary>The open image.</summary>
    public Qcow2Image Image { get; }

    /// <summary>
    /// Opens <paramref name="path"/> (a clean image on the host file system, copied onto a
    /// simulated disk) read-write; <paramref name="wrap"/> may put a fault injector over the disk.
    /// </summary>
    public static async Task<EngineOnSimulatedDisk> OpenAsync(string path, string hocon, Func<CrashSimulatingDevice, IBlockDevice>? wrap = null)
    {
        var full = Path.GetFullPath(path);
        var disk = new CrashSimulatingDevice(await File.ReadAllBytesAsync(full), full);
        var top = wrap?.Invoke(disk) ?? disk;
        var counters = new DeviceCallCounters();
        var host = ImageHost.Create(hocon, "chaos-writer");
        try
        {
            var image = await host.OpenAsync(full, new Qcow2OpenOptions
            {
                ReadOnly = false,
                Format = "qcow2",
                DeviceFactory = (p, writable) => Path.GetFullPath(p) == full
                    ? new SharedDeviceHandle(top, counters, readOnly: !writable)
                    : ResilientBlockDevice.OpenFile(p, writable),
            });
            return new EngineOnSimulatedDisk(full, disk, top, counters, host, image);
        }
        catch
        {
            await host.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// The crash: the power goes (nothing more reaches the disk) and the actor system is torn
    /// down with the image still open. Returns the journal file's bytes as the crash left them.
    /// </summary>
    public async Task<byte[]?> CrashAsync()
    {
        Disk.PowerCut();
        if (_host is { } host)
        {
            _host = null;
            await host.DisposeAsync();
        }
        var journal = _path + ".journal";
        return File.Exists(journal) ? await File.ReadAllBytesAsync(journal) : null;
    }

    /// <summary>
    /// Writes up to <paramref name="max"/> crash states of the disk, each with the journal beside it,
    /// into <paramref name="dir"/>, and runs recovery and every check on each. Returns how many passed (all, or it throws).
    /// </summary>
    public async Task<int> VerifyCrashStatesAsync(byte[]? journal, DiskModel model, string dir, int max, Random random, string context)
    {
        await using var recovery = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s", "chaos-recovery");
        var n = 0;
        foreach (var crash in Disk.EnumerateCrashStates(max, random))
        {
            var stateDir = Path.Combine(dir, $"state{n}");
            Directory.CreateDirectory(stateDir);
            var path = Path.Combine(stateDir, "crashed.qcow2");
            crash.WriteTo(path);
            if (journal is not null) await File.WriteAllBytesAsync(path + ".journal", journal);
            var verdict = await ChaosRecovery.RecoverAndVerifyAsync(recovery, path, model);
            if (!verdict.Ok)
                throw new CrashConsistencyException($"{context}, crash state {n} ({crash.Description}): {verdict}", null);
            Directory.Delete(stateDir, recursive: true);
            n++;
        }
        return n;
    }

    public async ValueTask DisposeAsync()
    {
        if (_host is { } host)
        {
            _host = null;
            await host.DisposeAsync();
        }
    }
}
