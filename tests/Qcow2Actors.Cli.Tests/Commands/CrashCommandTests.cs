using System.Diagnostics;
using System.Text.Json;
using Qcow2Actors.CrashLab;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Nbd;
using Qcow2Actors.Nbd.Exports;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Cli.Tests.Commands;

/// <summary>
/// The crash lab end to end: a workload is recorded through <see cref="RecordingExport"/> (what
/// <c>q2a serve --record</c> serves), then <c>q2a crash check</c> runs as a user runs it and its report and
/// rebuild command are checked against the workload's known bug.
/// </summary>
public sealed class CrashCommandTests : IAsyncLifetime
{
    private const byte CommitByte = 0xc1;
    private const byte DataByte = 0xda;
    private const long DataOffset = 65536;

    // Passes unless the commit record (sector 0) is on disk while the data block it commits is not (all of it).
    private const string OrderingChecker =
        "qemu-io -r -f qcow2 -c 'read -P 0xc1 0 512' {image} >/dev/null 2>&1 || exit 0; " +
        "qemu-io -r -f qcow2 -c 'read -P 0xda 65536 4096' {image}";

    private readonly TempDir _dir = new();
    private ImageHost _host = null!;

    public Task InitializeAsync()
    {
        _host = ImageHost.Create();
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _host.DisposeAsync();
        _dir.Dispose();
    }

    /// <summary>Records <paramref name="workload"/> against a fresh qcow2 image; returns the log's path.</summary>
    private async Task<string> RecordAsync(string name, long size, Func<INbdExport, Task> workload)
    {
        var image = _dir.File(name + ".qcow2");
        var log = _dir.File(name + ".log");
        var qcow2 = await _host.CreateAsync(image, new Qcow2CreateOptions { Size = size });
        await using var recording = await RecordingExport.StartAsync(new Qcow2Export(qcow2, name, ownsImage: true), log, ownsInner: true);
        await workload(recording);
        return log;
    }

    private static ReadOnlyMemory<byte> Filled(int length, byte value) => Enumerable.Repeat(value, length).ToArray();

    // The bug: the commit record is written before its data with no flush between, so a crash may keep the
    // commit and lose the data.
    private Task<string> RecordBuggyAsync() => RecordAsync("buggy", 1 << 20, async disk =>
    {
        await disk.WriteAsync(0, Filled(512, CommitByte), fua: false, default);
        await disk.WriteAsync(DataOffset, Filled(4096, DataByte), fua: false, default);
        await disk.FlushAsync(default);
    });

    // Correct: the data is flushed before the commit record is written.
    private Task<string> RecordCorrectAsync() => RecordAsync("correct", 1 << 20, async disk =>
    {
        await disk.WriteAsync(DataOffset, Filled(4096, DataByte), fua: false, default);
        await disk.FlushAsync(default);
        await disk.WriteAsync(0, Filled(512, CommitByte), fua: false, default);
        await disk.FlushAsync(default);
    });

    [QemuFact]
    public async Task Crash_check_finds_the_states_where_a_commit_outlived_its_data_and_rebuilds_one()
    {
        var log = await RecordBuggyAsync();

        var (code, stdout, stderr) = await RunQ2aAsync("crash", "check", log, "--check", OrderingChecker, "--output", "json", "--jobs", "2");

        Assert.True(code == 1, $"exit {code}: {stderr}");
        using var report = JsonDocument.Parse(stdout);
        var root = report.RootElement;
        // 2 fates of the commit x 16 of the 8-sector data block before the flush, + the flushed state.
        Assert.Equal(33, root.GetProperty("states").GetInt32());
        Assert.True(root.GetProperty("exhaustive").GetBoolean());
        // Commit kept while the data is dropped (1) or torn (7 prefixes + 7 suffixes).
        Assert.Equal(15, root.GetProperty("failed").GetInt32());
        var failure = root.GetProperty("failures")[0];
        Assert.Equal(0, failure.GetProperty("epoch").GetInt32());
        Assert.Contains(1, failure.GetProperty("kept").EnumerateArray().Select(e => e.GetInt64()));
        Assert.Contains("Pattern verification failed", failure.GetProperty("output").GetString());

        // The one command line printed rebuilds exactly that state: the checker fails on it again.
        var rebuild = failure.GetProperty("rebuild").GetString()!.Split(' ');
        Assert.Equal(["q2a", "crash", "state", log, "--id", failure.GetProperty("id").GetString()!, "-o"], rebuild[..^1]);
        var rebuilt = _dir.File(rebuild[^1]);
        var (rebuildCode, _, rebuildErr) = await RunQ2aAsync([.. rebuild[1..^1], rebuilt]);
        Assert.True(rebuildCode == 0, rebuildErr);
        QemuTools.QemuImg("check", rebuilt).EnsureSuccess();
        QemuTools.QemuIo("-r", "-f", "qcow2", "-c", "read -P 0xc1 0 512", rebuilt).EnsureSuccess();
        Assert.NotEqual(0, QemuTools.QemuIo("-r", "-f", "qcow2", "-c", "read -P 0xda 65536 4096", rebuilt).ExitCode);
    }

    [QemuFact]
    public async Task Crash_check_passes_every_state_of_the_workload_that_flushes_its_data_before_the_commit()
    {
        var log = await RecordCorrectAsync();

        var (code, stdout, stderr) = await RunQ2aAsync("crash", "check", log, "--check", OrderingChecker, "--output", "json");

        Assert.True(code == 0, $"exit {code}: {stderr}{stdout}");
        using var report = JsonDocument.Parse(stdout);
        // 16 fates of the data before the first flush, 2 of the commit before the second, + the end.
        Assert.Equal(19, report.RootElement.GetProperty("states").GetInt32());
        Assert.Equal(0, report.RootElement.GetProperty("failed").GetInt32());
    }

    [QemuFact]
    public async Task Crash_check_serves_each_state_read_only_over_NBD_for_a_uri_checker()
    {
        var log = await RecordBuggyAsync();
        const string UriChecker =
            "qemu-io -r -f raw -c 'read -P 0xc1 0 512' {uri} >/dev/null 2>&1 || exit 0; " +
            "qemu-io -r -f raw -c 'read -P 0xda 65536 4096' {uri} && ! qemu-io -f raw -c 'write 0 512' {uri} >/dev/null 2>&1";

        var (code, stdout, stderr) = await RunQ2aAsync("crash", "check", log, "--check", UriChecker, "--output", "json", "--sector", "4096");

        Assert.True(code == 1, $"exit {code}: {stderr}");
        using var report = JsonDocument.Parse(stdout);
        // At 4 KiB sectors the data block cannot tear: 2 x 2 states before the flush, + the flushed state.
        Assert.Equal(5, report.RootElement.GetProperty("states").GetInt32());
        Assert.Equal(1, report.RootElement.GetProperty("failed").GetInt32());
        Assert.EndsWith("--sector 4096 -o p0x1.qcow2", report.RootElement.GetProperty("failures")[0].GetProperty("rebuild").GetString());
    }

    [Fact]
    public async Task Crash_check_that_cannot_run_exits_2_with_one_line_naming_what_is_missing()
    {
        var notALog = _dir.File("not-a-log");
        await File.WriteAllTextAsync(notALog, "hello");
        var missingImage = _dir.File("gone.log");
        await using (CrashLogWriter.Create(missingImage, new CrashLogHeader(_dir.File("gone.qcow2"), "q2a-record-x", 1 << 20, DateTimeOffset.UnixEpoch))) { }

        var bad = await RunQ2aAsync("crash", "check", notALog, "--check", "true {image}");
        var gone = await RunQ2aAsync("crash", "check", missingImage, "--check", "true {image}");
        var absent = await RunQ2aAsync("crash", "check", _dir.File("absent.log"), "--check", "true {image}");

        Assert.Equal((2, ""), (bad.Code, bad.Stdout));
        Assert.Equal($"q2a: crash log {notALog}: not a crash log (magic at offset 0 is not Q2ACRLOG or the file is shorter than a header).\n", bad.Stderr);
        Assert.Equal(2, gone.Code);
        Assert.Equal($"q2a: recorded image {_dir.File("gone.qcow2")} does not exist (named in the crash log header).\n", gone.Stderr);
        Assert.Equal(2, absent.Code);
        Assert.Contains(_dir.File("absent.log"), absent.Stderr);
        Assert.Single(absent.Stderr.TrimEnd('\n').Split('\n'));
    }

    [Fact]
    public async Task Crash_states_lists_the_same_sample_for_the_same_seed()
    {
        var log = await RecordAsync("many", 1 << 20, async disk =>
        {
            for (var i = 0; i < 12; i++)
                await disk.WriteAsync(i * 8192L, Filled(8192, (byte)i), fua: false, default);
            await disk.FlushAsync(default);
        });

        var first = await RunQ2aAsync("crash", "states", log, "--max-states", "20", "--seed", "5");
        var second = await RunQ2aAsync("crash", "states", log, "--max-states", "20", "--seed", "5");
        var other = await RunQ2aAsync("crash", "states", log, "--max-states", "20", "--seed", "6");

        Assert.Equal(0, first.Code);
        Assert.Equal(first.Stdout, second.Stdout);
        Assert.NotEqual(first.Stdout, other.Stdout);
        Assert.EndsWith("20 states (sampled with seed 5 from ", first.Stdout.Split('\n')[^2][..36]);
    }

    [Ext4Fact]
    public async Task Crash_check_runs_e2fsck_over_sampled_states_of_mkfs_ext4_recorded_through_nbdfuse()
    {
        var source = Directory.CreateDirectory(_dir.File("src")).FullName;
        await File.WriteAllTextAsync(Path.Combine(source, "hello.txt"), "hello, crash lab\n");
        await File.WriteAllBytesAsync(Path.Combine(source, "blob.bin"), Enumerable.Range(0, 200_000).Select(i => (byte)(i * 7)).ToArray());
        var mount = Directory.CreateDirectory(_dir.File("mnt")).FullName;
        var socket = _dir.File("rec.sock");

        var log = await RecordAsync("ext4", 16 << 20, async disk =>
        {
            await using var server = new NbdServer(NbdServerOptions.Unix([disk], socket));
            await server.StartAsync();
            // mkfs.ext4 populating the file system from a directory, one more file copied in afterwards, then sync.
            var script = $"""
                set -e
                nbdfuse -P {_dir.File("fuse.pid")} {mount}/disk 'nbd+unix:///ext4?socket={socket}' &
                i=0; while [ ! -s {_dir.File("fuse.pid")} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
                mkfs.ext4 -F -q -d {source} {mount}/disk
                debugfs -w -R 'write /etc/hostname copied' {mount}/disk
                sync {mount}/disk
                umount {mount}
                wait
                """;
            var result = QemuTools.Run("/bin/sh", ["-c", script]);
            Assert.True(result.ExitCode == 0, result.StdErr + result.StdOut);
        });

        var (code, stdout, stderr) = await RunQ2aAsync("crash", "check", log, "--check", "e2fsck -fn {raw}", "--max-states", "20", "--seed", "3", "--jobs", "2", "--output", "json");

        Assert.True(code is 0 or 1, $"exit {code}: {stderr}");
        using var report = JsonDocument.Parse(stdout);
        Assert.Equal(20, report.RootElement.GetProperty("states").GetInt32());
        Assert.False(report.RootElement.GetProperty("exhaustive").GetBoolean());
        // The state after the final sync (the last point, everything durable) is a clean file system.
        var last = report.RootElement.GetProperty("points").GetInt32() - 1;
        Assert.DoesNotContain(report.RootElement.GetProperty("failures").EnumerateArray(), f => f.GetProperty("id").GetString() == $"p{last}x0");
        var raw = _dir.File("final.raw");
        var rebuilt = await RunQ2aAsync("crash", "state", log, "--id", $"p{last}x0", "-O", "raw", "-o", raw);
        Assert.True(rebuilt.Code == 0, rebuilt.Stderr);
        var fsck = QemuTools.Run("e2fsck", "-fn", raw);
        Assert.True(fsck.ExitCode == 0, fsck.StdOut + fsck.StdErr);
        // The files mkfs -d and debugfs put there survived the final sync.
        var listing = QemuTools.Run("debugfs", "-R", "ls /", raw).StdOut;
        Assert.Contains("hello.txt", listing);
        Assert.Contains("blob.bin", listing);
        Assert.Contains("copied", listing);
    }

    private static async Task<(int Code, string Stdout, string Stderr)> RunQ2aAsync(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "q2a.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"q2a {string.Join(' ', args)} did not exit within 120 s");
        }

        return (process.ExitCode, await stdout, await stderr);
    }
}

/// <summary>A test that needs nbdfuse, FUSE and e2fsprogs (skips without them, fails without them under CI=true).</summary>
public sealed class Ext4FactAttribute : FactAttribute
{
    public Ext4FactAttribute()
    {
        Skip = QemuTools.SkipReason("nbdfuse", "mkfs.ext4", "e2fsck", "debugfs")
               ?? (File.Exists("/dev/fuse") || QemuTools.IsCi ? null : "needs /dev/fuse");
    }
}
