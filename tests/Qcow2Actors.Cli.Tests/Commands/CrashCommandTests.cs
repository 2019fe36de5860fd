using System.Text.Json;
using Qcow2Actors.CrashLab;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Nbd;
using Qcow2Actors.Nbd.Exports;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Cli.Tests.Commands;

/// <summary>
/// <c>q2a crash</c> run as a user runs it, over workloads recorded in process through <see cref="RecordingExport"/>
/// (what <c>q2a serve --record</c> serves): NBD-served states, refusals, seeded sampling. The recorded-by-serve
/// workloads (ordering bug, mkfs.ext4) are in Qcow2Actors.Interop.Tests' CrashLabInteropTests.
/// </summary>
public sealed class CrashCommandTests : IAsyncLifetime
{
    private const byte CommitByte = 0xc1;
    private const byte DataByte = 0xda;
    private const long DataOffset = 65536;

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

    [QemuFact]
    public async Task Crash_check_serves_each_state_read_only_over_NBD_for_a_uri_checker()
    {
        var log = await RecordBuggyAsync();
        const string UriChecker =
            "qemu-io -r -f raw -c 'read -P 0xc1 0 512' {uri} >/dev/null 2>&1 || exit 0; " +
            "qemu-io -r -f raw -c 'read -P 0xda 65536 4096' {uri} && ! qemu-io -f raw -c 'write 0 512' {uri} >/dev/null 2>&1";

        var kept = _dir.File("kept");
        var (code, stdout, stderr) = QemuTools.Q2a("crash", "check", log, "--check", UriChecker, "--output", "json", "--sector", "4096", "--keep-failed", kept);

        Assert.True(code == 1, $"exit {code}: {stderr}");
        using var report = JsonDocument.Parse(stdout);
        // At 4 KiB sectors the data block cannot tear: 2 x 2 states before the flush, + the flushed state.
        Assert.Equal(5, report.RootElement.GetProperty("states").GetInt32());
        Assert.Equal(1, report.RootElement.GetProperty("failed").GetInt32());
        var failure = report.RootElement.GetProperty("failures")[0];
        Assert.EndsWith("--sector 4096 -o p0x1.qcow2", failure.GetProperty("rebuild").GetString());
        // --keep-failed: the failing state as one standalone image, the commit without its data.
        Assert.Equal(Path.Combine(kept, "p0x1.qcow2"), failure.GetProperty("kept").GetString());
        QemuTools.AssertCheckClean(Path.Combine(kept, "p0x1.qcow2"));
        QemuTools.QemuIo("-r", "-f", "qcow2", "-c", "read -P 0xc1 0 512", "-c", "read -P 0 65536 4096", Path.Combine(kept, "p0x1.qcow2")).EnsureSuccess();
    }

    [Fact]
    public async Task Crash_check_that_cannot_run_exits_2_with_one_line_naming_what_is_missing()
    {
        var notALog = _dir.File("not-a-log");
        await File.WriteAllTextAsync(notALog, "hello");
        var missingImage = _dir.File("gone.log");
        await using (CrashLogWriter.Create(missingImage, new CrashLogHeader(_dir.File("gone.qcow2"), "q2a-record-x", 1 << 20, DateTimeOffset.UnixEpoch))) { }

        var bad = QemuTools.Q2a("crash", "check", notALog, "--check", "true {image}");
        var gone = QemuTools.Q2a("crash", "check", missingImage, "--check", "true {image}");
        var absent = QemuTools.Q2a("crash", "check", _dir.File("absent.log"), "--check", "true {image}");

        Assert.Equal((2, ""), (bad.ExitCode, bad.StdOut));
        Assert.Equal($"q2a: crash log {notALog}: not a crash log (magic at offset 0 is not Q2ACRLOG or the file is shorter than a header).\n", bad.StdErr);
        Assert.Equal(2, gone.ExitCode);
        Assert.Equal($"q2a: recorded image {_dir.File("gone.qcow2")} does not exist (named in the crash log header).\n", gone.StdErr);
        Assert.Equal(2, absent.ExitCode);
        Assert.Contains(_dir.File("absent.log"), absent.StdErr);
        Assert.Single(absent.StdErr.TrimEnd('\n').Split('\n'));
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

        var first = QemuTools.Q2a("crash", "states", log, "--max-states", "20", "--seed", "5");
        var second = QemuTools.Q2a("crash", "states", log, "--max-states", "20", "--seed", "5");
        var other = QemuTools.Q2a("crash", "states", log, "--max-states", "20", "--seed", "6");

        Assert.Equal(0, first.ExitCode);
        Assert.Equal(first.StdOut, second.StdOut);
        Assert.NotEqual(first.StdOut, other.StdOut);
        Assert.EndsWith("20 states (sampled with seed 5 from ", first.StdOut.Split('\n')[^2][..36]);
    }
}
