using Qcow2Actors.Engine.Check;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Snapshots;
using Qcow2Actors.Engine.Tests.Device;
using Qcow2Actors.Format;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Snapshots;

/// <summary>
/// Every crash a snapshot edit can suffer, judged by our checker (which counts as qemu-img check
/// does): the edit runs on a device that records its writes between flushes; each crash state
/// keeps all writes of earlier flush epochs plus any one write of the current epoch, or all of them
/// but one (writes between flushes may land in any order). No crash state may hold a refcount
/// below its references — leaks are the only damage allowed — and the finished edit is clean.
/// </summary>
public sealed class SnapshotEditorCrashTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private byte[] QemuImage(string options, string size, params string[] io)
    {
        var path = _dir.File($"i{Guid.NewGuid():N}.qcow2");
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", "-o", options, path, size).EnsureSuccess();
        QemuTools.QemuIo([.. io.SelectMany(c => new[] { "-c", c }), path]).EnsureSuccess();
        return File.ReadAllBytes(path);
    }

    private static void AssertEveryCrashOnlyLeaks(byte[] initial, RecordingDevice recorded)
    {
        int n = 0;
        foreach (var state in RecordingDevice.CrashStates(initial, recorded))
        {
            var result = ImageChecker.Check(new MemoryBlockDevice(state), $"crash state {n}");
            Assert.True(result.AbortReason is null && result.CheckErrors == 0, $"crash state {n}: {string.Join("; ", result.Messages)}");
            var below = result.Mismatches.Where(m => !m.IsLeak).ToList();
            Assert.True(below.Count == 0, $"crash state {n}: refcount below references at {string.Join(", ", below.Take(5))}");
            n++;
        }
        Assert.True(n > 3, "the edit flushed fewer times than its ordering needs");
    }

    private static void AssertClean(IBlockDevice device)
    {
        var result = ImageChecker.Check(device, "final");
        Assert.True(result.Corruptions == 0 && result.Leaks == 0 && result.CheckErrors == 0, string.Join("; ", result.Messages));
    }

    public static TheoryData<string, string, string[]> Images => new()
    {
        { "cluster_size=65536", "16M", ["write -P 1 0 2M", "write -c -P 2 4M 64k", "write -c -P 3 4160k 64k", "write -z 6M 64k"] },
        { "cluster_size=4096,refcount_bits=8", "4M", ["write -P 1 0 1M", "write -c -P 2 2M 4k"] },
        { "extended_l2=on,refcount_bits=64", "8M", ["write -P 1 0 1M", "write -P 2 2M 4k", "write -z 3M 64k"] },
        { "compat=0.10", "8M", ["write -P 1 0 1M"] },
        // Just below what one refcount table cluster covers: the snapshot's allocations move the table.
        { "cluster_size=512,refcount_bits=64", "4M", ["write -P 1 0 1982k"] },
    };

    [QemuTheory]
    [MemberData(nameof(Images))]
    public void Every_crash_during_create_leaves_at_most_leaks(string options, string size, string[] io)
    {
        var initial = QemuImage(options, size, io);
        var device = new RecordingDevice(new MemoryBlockDevice(initial));
        SnapshotEditor.Create(device, "s1", DateTimeOffset.UnixEpoch);
        AssertClean(device);
        AssertEveryCrashOnlyLeaks(initial, device);
    }

    [QemuTheory]
    [MemberData(nameof(Images))]
    public void Every_crash_during_apply_and_delete_leaves_at_most_leaks(string options, string size, string[] io)
    {
        var path = _dir.File($"a{Guid.NewGuid():N}.qcow2");
        File.WriteAllBytes(path, QemuImage(options, size, io));
        QemuTools.QemuImg("snapshot", "-c", "s1", path).EnsureSuccess();
        QemuTools.QemuIo("-c", "write -P 9 0 128k", "-c", "write -z 1M 64k", path).EnsureSuccess();
        var initial = File.ReadAllBytes(path);

        var applied = new RecordingDevice(new MemoryBlockDevice(initial));
        SnapshotEditor.Apply(applied, "s1");
        AssertClean(applied);
        AssertEveryCrashOnlyLeaks(initial, applied);

        var deleted = new RecordingDevice(new MemoryBlockDevice(initial));
        SnapshotEditor.Delete(deleted, "s1");
        AssertClean(deleted);
        Assert.Empty(SnapshotEditor.List(deleted));
        AssertEveryCrashOnlyLeaks(initial, deleted);
    }

    [QemuFact]
    public void A_refused_edit_writes_nothing()
    {
        var initial = QemuImage("refcount_bits=2", "4M", "write -P 1 0 64k");
        var device = new FaultyDevice(new MemoryBlockDevice(initial));
        SnapshotEditor.Create(device, "s1", DateTimeOffset.UnixEpoch);
        SnapshotEditor.Create(device, "s2", DateTimeOffset.UnixEpoch);
        int writes = device.Writes, flushes = device.Flushes;
        var ex = Assert.Throws<SnapshotEditException>(() => SnapshotEditor.Create(device, "s3", DateTimeOffset.UnixEpoch));
        Assert.Contains("would exceed 3", ex.Message, StringComparison.Ordinal);
        Assert.Throws<SnapshotEditException>(() => SnapshotEditor.Apply(device, "s1"));
        Assert.Throws<SnapshotEditException>(() => SnapshotEditor.Delete(device, "nope"));
        Assert.Equal((writes, flushes), (device.Writes, device.Flushes));
    }

    [QemuFact]
    public void Created_snapshots_get_the_next_numeric_id_the_date_and_the_disk_size()
    {
        var initial = QemuImage("cluster_size=65536", "3M", "write -P 1 0 64k");
        var device = new MemoryBlockDevice(initial);
        var when = DateTimeOffset.FromUnixTimeMilliseconds(1_700_000_000_123);
        SnapshotEditor.Create(device, "a", when);
        SnapshotEditor.Create(device, "b", when);
        SnapshotEditor.Delete(device, "a");
        var c = SnapshotEditor.Create(device, "c", when);
        Assert.Equal("3", c.Id);
        var list = SnapshotEditor.List(device);
        Assert.Equal(["2", "3"], list.Select(e => e.Id));
        Assert.Equal(1_700_000_000u, c.DateSeconds);
        Assert.Equal(123_000_000u, c.DateNanoseconds);
        Assert.Equal(3L << 20, list[1].DiskSize);
        Assert.Equal(0, list[1].Icount);
        AssertClean(device);
    }
}
