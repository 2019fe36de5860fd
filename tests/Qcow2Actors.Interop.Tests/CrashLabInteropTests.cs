using System.Text.Json;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// The crash lab as a user runs it: a guest's workload is recorded by <c>q2a serve --record</c> (out of process,
/// qemu-io or mkfs.ext4 through nbdfuse as the guest), then <c>q2a crash check</c> runs the user's checker against
/// the crash states, and the rebuild command it prints reproduces a failing state.
/// </summary>
public sealed class CrashLabInteropTests : IDisposable
{
    // Passes unless the commit record (sector 0) is on disk while the 4 KiB data block at 64 KiB it commits is not.
    private const string OrderingChecker =
        "qemu-io -r -f qcow2 -c 'read -P 0xc1 0 512' {image} >/dev/null 2>&1 || exit 0; " +
        "qemu-io -r -f qcow2 -c 'read -P 0xda 65536 4096' {image}";

    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>Serves a new image with --record, runs qemu-io's <paramref name="commands"/> as the guest, stops.</summary>
    private async Task<string> RecordQemuIoAsync(string name, params string[] commands)
    {
        var img = _dir.File(name + ".qcow2");
        var log = _dir.File(name + ".crashlog");
        ImageCreator.Create(img, new Qcow2CreateOptions { Size = 1 << 20 });
        using var server = await ServeProcess.StartAsync(1, "--socket", _dir.File(name + ".sock"), "--record", log, img);
        // -t writeback: qemu-io's default (writethrough) would send every write with FUA.
        QemuTools.QemuIo(["-t", "writeback", "-f", "raw", server.Uri, .. commands.SelectMany(c => new[] { "-c", c })]).EnsureSuccess();
        Assert.Equal(0, server.Stop());
        return log;
    }

    [ServeFact]
    public async Task A_commit_written_before_its_data_without_a_flush_between_fails_the_states_where_it_outlived_the_data()
    {
        var log = await RecordQemuIoAsync("buggy", "write -P 0xc1 0 512", "write -P 0xda 64k 4k", "flush");

        var check = QemuTools.Q2a("crash", "check", log, "--check", OrderingChecker, "--jobs", "2", "--output", "json");

        Assert.True(check.ExitCode == 1, check.StdErr + check.StdOut);
        using var report = JsonDocument.Parse(check.StdOut);
        var root = report.RootElement;
        // Before the flush: 2 fates of the 1-sector commit x 16 of the 8-sector data (dropped, kept, 7 torn
        // prefixes, 7 torn suffixes); after it: everything durable.
        Assert.Equal(33, root.GetProperty("states").GetInt32());
        Assert.True(root.GetProperty("exhaustive").GetBoolean());
        // The commit kept while the data is dropped (1) or torn (14).
        Assert.Equal(15, root.GetProperty("failed").GetInt32());
        var failure = root.GetProperty("failures")[0];
        Assert.Equal(0, failure.GetProperty("epoch").GetInt32());
        Assert.Contains(1L, failure.GetProperty("kept").EnumerateArray().Select(e => e.GetInt64()));
        Assert.Contains("Pattern verification failed", failure.GetProperty("output").GetString());

        // The one command line printed rebuilds exactly that state: the checker's finding holds on it.
        var rebuild = failure.GetProperty("rebuild").GetString()!.Split(' ');
        Assert.Equal(["q2a", "crash", "state", log, "--id", failure.GetProperty("id").GetString()!, "-o"], rebuild[..^1]);
        var rebuilt = _dir.File(rebuild[^1]);
        QemuTools.Q2a([.. rebuild[1..^1], rebuilt]).EnsureSuccess();
        QemuTools.AssertCheckClean(rebuilt);
        QemuTools.QemuIo("-r", "-f", "qcow2", "-c", "read -P 0xc1 0 512", rebuilt).EnsureSuccess();
        Assert.NotEqual(0, QemuTools.QemuIo("-r", "-f", "qcow2", "-c", "read -P 0xda 65536 4096", rebuilt).ExitCode);
    }

    [ServeFact]
    public async Task Data_flushed_before_its_commit_passes_every_crash_state()
    {
        var log = await RecordQemuIoAsync("correct", "write -P 0xda 64k 4k", "flush", "write -P 0xc1 0 512", "flush");

        var check = QemuTools.Q2a("crash", "check", log, "--check", OrderingChecker, "--output", "json");

        Assert.True(check.ExitCode == 0, check.StdErr + check.StdOut);
        using var report = JsonDocument.Parse(check.StdOut);
        // 16 fates of the data before the first flush, 2 of the commit before the second, and the end.
        Assert.Equal(19, report.RootElement.GetProperty("states").GetInt32());
        Assert.Equal(0, report.RootElement.GetProperty("failed").GetInt32());
    }

    [Ext4Fact]
    public async Task Mkfs_ext4_and_a_copy_recorded_through_nbdfuse_are_checked_by_e2fsck_over_sampled_states()
    {
        var source = Directory.CreateDirectory(_dir.File("src")).FullName;
        await File.WriteAllTextAsync(Path.Combine(source, "hello.txt"), "hello, crash lab\n");
        await File.WriteAllBytesAsync(Path.Combine(source, "blob.bin"), Enumerable.Range(0, 200_000).Select(i => (byte)(i * 7)).ToArray());
        var mount = Directory.CreateDirectory(_dir.File("mnt")).FullName;
        var img = _dir.File("ext4.qcow2");
        var log = _dir.File("ext4.crashlog");
        ImageCreator.Create(img, new Qcow2CreateOptions { Size = 16 << 20 });
        using (var server = await ServeProcess.StartAsync(1, "--socket", _dir.File("rec.sock"), "--record", log, img))
        {
            // mkfs.ext4 populating the file system from a directory, one more file copied in with debugfs, then
            // sync; nbdfuse turns the FUSE file's writes and fsyncs into NBD writes and flushes.
            var pid = _dir.File("fuse.pid");
            var script = $"""
                set -e
                nbdfuse -P {pid} {mount}/disk '{server.Uri}' &
                i=0; while [ ! -s {pid} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
                mkfs.ext4 -F -q -d {source} {mount}/disk
                debugfs -w -R 'write /etc/hostname copied' {mount}/disk
                sync {mount}/disk
                umount {mount}
                wait
                """;
            var guest = QemuTools.Run("/bin/sh", "-c", script);
            Assert.True(guest.ExitCode == 0, guest.StdErr + guest.StdOut);
            Assert.Equal(0, server.Stop());
        }

        var check = QemuTools.Q2a("crash", "check", log, "--check", "e2fsck -fn {raw}", "--max-states", "20", "--seed", "3", "--jobs", "2", "--output", "json");

        // Crash states in the middle of mkfs are not file systems yet, so some fail; the run itself completes.
        Assert.True(check.ExitCode is 0 or 1, check.StdErr);
        using var report = JsonDocument.Parse(check.StdOut);
        Assert.Equal(20, report.RootElement.GetProperty("states").GetInt32());
        Assert.False(report.RootElement.GetProperty("exhaustive").GetBoolean());
        // The state after the final sync (the last point, everything durable) is a clean file system with the files.
        var last = report.RootElement.GetProperty("points").GetInt32() - 1;
        Assert.DoesNotContain(report.RootElement.GetProperty("failures").EnumerateArray(), f => f.GetProperty("id").GetString() == $"p{last}x0");
        var raw = _dir.File("final.raw");
        QemuTools.Q2a("crash", "state", log, "--id", $"p{last}x0", "-O", "raw", "-o", raw).EnsureSuccess();
        var fsck = QemuTools.Run("e2fsck", "-fn", raw);
        Assert.True(fsck.ExitCode == 0, fsck.StdOut + fsck.StdErr);
        var listing = QemuTools.Run("debugfs", "-R", "ls /", raw).StdOut;
        Assert.Contains("hello.txt", listing);
        Assert.Contains("blob.bin", listing);
        Assert.Contains("copied", listing);
    }
}

/// <summary>A test that needs nbdfuse over /dev/fuse, mount rights and e2fsprogs (skips without them, fails under CI=true).</summary>
public sealed class Ext4FactAttribute : FactAttribute
{
    public Ext4FactAttribute()
    {
        Skip = QemuTools.SkipReason("nbdfuse", "mkfs.ext4", "e2fsck", "debugfs", "qemu-io")
               ?? (File.Exists("/dev/fuse") || QemuTools.IsCi ? null : "needs /dev/fuse");
    }
}
