using Qcow2Actors.Chaos.Devices;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Chaos.Tests;

/// <summary>
/// Crash states materialised as files and judged by qemu-img: the path the engine's crash tests
/// take. Here the "workload" is qemu-io's own allocating write, replayed onto the device as the
/// sector runs it changed, with no flush in between, so some crash states must be inconsistent.
/// </summary>
public class QemuCrashStateTests
{
    [QemuFact]
    public void Crash_states_of_an_unflushed_qcow2_allocation_are_files_qemu_img_can_judge()
    {
        using var dir = new TempDir();
        var before = dir.File("before.qcow2");
        var after = dir.File("after.qcow2");
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", before, "4M").EnsureSuccess();
        File.Copy(before, after);
        QemuTools.QemuIo("-f", "qcow2", "-c", "write -P 0x5a 1M 64k", after).EnsureSuccess();
        var oldBytes = File.ReadAllBytes(before);
        var newBytes = File.ReadAllBytes(after);
        using var device = new CrashSimulatingDevice(oldBytes, before);
        foreach (var (offset, length) in ChangedSectorRuns(oldBytes, newBytes))
            device.Write(newBytes.AsSpan((int)offset, (int)length), offset);

        var verdicts = new List<(string State, int Exit)>();
        foreach (var crash in device.EnumerateCrashStates(16, new Random(5)))
        {
            var path = dir.File($"state{verdicts.Count}.qcow2");
            crash.WriteTo(path);
            verdicts.Add((crash.Description, QemuTools.QemuImg("check", "-f", "qcow2", path).ExitCode));
        }

        Assert.Equal(0, verdicts[0].Exit);
        Assert.Equal(0, verdicts[1].Exit);
        QemuTools.QemuImg("compare", "-f", "qcow2", "-F", "qcow2", dir.File("state1.qcow2"), after).EnsureSuccess();
        // Losing the L2 entry while keeping the refcount (or the reverse) is what an unordered cache
        // does to qemu without a flush between them; qemu-img must see it as leaks (3) or errors (2).
        Assert.Contains(verdicts, v => v.Exit is 2 or 3);
    }

    private static IEnumerable<(long Offset, long Length)> ChangedSectorRuns(byte[] oldBytes, byte[] newBytes)
    {
        const int sector = CrashSimulatingDevice.SectorSize;
        long? start = null;
        var sectors = (newBytes.Length + sector - 1) / sector;
        for (var s = 0; s <= sectors; s++)
        {
            var changed = s < sectors && !Slice(oldBytes, s).SequenceEqual(Slice(newBytes, s));
            if (changed && start is null) start = (long)s * sector;
            if (!changed && start is { } from)
            {
                yield return (from, Math.Min((long)s * sector, newBytes.Length) - from);
                start = null;
            }
        }

        static ReadOnlySpan<byte> Slice(byte[] bytes, int s)
        {
            var from = Math.Min(bytes.Length, s * sector);
            return bytes.AsSpan(from, Math.Min(sector, bytes.Length - from));
        }
    }
}
