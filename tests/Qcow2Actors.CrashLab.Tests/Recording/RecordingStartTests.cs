using Microsoft.Extensions.Time.Testing;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Nbd.Exports;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.CrashLab.Tests.Recording;

/// <summary>
/// Starting a recording of a served qcow2 image: the base snapshot named for the start time and the header naming it;
/// an existing log or a read-only export refused before anything is changed.
/// </summary>
public sealed class RecordingStartTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private async Task<Qcow2Export> ServeAsync(string name, bool readOnly = false)
    {
        var path = _dir.File(name);
        if (!File.Exists(path)) ImageCreator.Create(path, new Qcow2CreateOptions { Size = 4 << 20 });
        var image = await Qcow2Image.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = readOnly });
        return new Qcow2Export(image, name, readOnly, ownsImage: true);
    }

    [QemuFact]
    public async Task Starting_takes_the_base_snapshot_named_for_the_start_time_and_writes_it_into_the_header()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 11, 30, 19, 30, 5, 250, TimeSpan.Zero));
        var served = await ServeAsync("disk.qcow2");
        var before = new byte[4096];
        Array.Fill(before, (byte)0x11);
        await served.WriteAsync(0, before, fua: false, CancellationToken.None);
        var log = _dir.File("disk.crashlog");

        await using (var recording = await RecordingExport.StartAsync(served, log, ownsInner: true, time: time))
        {
            Assert.Equal("q2a-record-20261130T193005Z", recording.BaseSnapshot);
            Assert.Equal(log, recording.LogPath);
            Assert.Equal(["q2a-record-20261130T193005Z"], (await served.Image.ListSnapshotsAsync()).Select(s => s.Name));
            await recording.WriteAsync(0, new byte[4096], fua: true, CancellationToken.None);
        }

        var read = CrashLogTestReader.Read(log);
        Assert.Equal((_dir.File("disk.qcow2"), "q2a-record-20261130T193005Z", 4L << 20, time.GetUtcNow()),
            (read.ImagePath, read.BaseSnapshot, read.VirtualSize, read.Started));
        Assert.Equal(["write 0+4096 fua ok"], read.Operations);
        QemuTools.AssertCheckClean(_dir.File("disk.qcow2"));
    }

    [Fact]
    public async Task An_existing_log_is_refused_naming_it_and_no_snapshot_is_taken()
    {
        await using var served = await ServeAsync("disk.qcow2");
        var log = _dir.File("old.crashlog");
        await File.WriteAllTextAsync(log, "an earlier recording");

        var error = await Assert.ThrowsAsync<IOException>(() => RecordingExport.StartAsync(served, log));
        Assert.Equal($"recording log '{log}' exists: a recording is never overwritten, choose a new path", error.Message);
        Assert.Equal("an earlier recording", await File.ReadAllTextAsync(log));
        Assert.Empty(await served.Image.ListSnapshotsAsync());
    }

    [Fact]
    public async Task A_log_that_cannot_be_created_leaves_no_snapshot_behind()
    {
        await using var served = await ServeAsync("disk.qcow2");
        var log = Path.Combine(_dir.Path, "missing-dir", "x.crashlog");

        await Assert.ThrowsAsync<DirectoryNotFoundException>(() => RecordingExport.StartAsync(served, log));
        Assert.Empty(await served.Image.ListSnapshotsAsync());
    }

    [Fact]
    public async Task A_read_only_export_is_refused_before_any_snapshot()
    {
        ImageCreator.Create(_dir.File("ro.qcow2"), new Qcow2CreateOptions { Size = 1 << 20 });
        await using var served = await ServeAsync("ro.qcow2", readOnly: true);
        var error = await Assert.ThrowsAsync<ArgumentException>(() => RecordingExport.StartAsync(served, _dir.File("ro.crashlog")));
        Assert.Equal("cannot record export 'ro.qcow2': it is read-only, a recording needs a writable export", error.Message);
        Assert.False(File.Exists(_dir.File("ro.crashlog")));
    }
}
