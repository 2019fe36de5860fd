using System.Collections.Concurrent;
using System.Text;
using System.Threading.Channels;
using Qcow2Actors.Chaos.Devices;
using Qcow2Actors.Cli.Commands;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Tests.Shared;
using Xunit.Abstractions;

namespace Qcow2Actors.Cli.Tests;

/// <summary>
/// <c>q2a serve</c> in process, its image on a device that starts failing fsync: the fault is one
/// stderr line naming the image when it happens, qemu-io's writes then fail with EIO (not EPERM),
/// and the exit status says the image was not closed clean.
/// </summary>
public sealed class ServeCommandTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>Runs serve in process until <c>stop</c> completes; returns once it printed its URI.</summary>
    private static async Task<(Task<int> Run, string Uri, StringWriter Stderr, TaskCompletionSource Stop)> StartAsync(ServeSettings settings)
    {
        var stdout = new LineWriter();
        var stderr = new StringWriter();
        var stop = new TaskCompletionSource();
        var run = ServeCommand.RunAsync(settings, stdout, stderr, stop.Task);
        var uri = (await stdout.Lines.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(60)))["Serving ".Length..];
        return (run, uri, stderr, stop);
    }

    [QemuFact]
    public async Task An_image_that_turns_read_only_is_logged_once_fails_writes_with_EIO_and_makes_the_exit_status_non_zero()
    {
        var image = _dir.File("disk.qcow2");
        ImageCreator.Create(image, new Qcow2CreateOptions { Size = 4 * 1024 * 1024 });
        var devices = new ConcurrentBag<FaultInjectingDevice>();
        var settings = ServeSettings.From([image], null, 0, null, null, false, null, null, null) with
        {
            DeviceFactory = (path, writable) =>
            {
                var device = new FaultInjectingDevice(ResilientBlockDevice.OpenFile(path, writable));
                devices.Add(device);
                return device;
            },
        };
        var (run, uri, stderr, stop) = await StartAsync(settings);

        QemuTools.QemuIo("-f", "raw", uri, "-c", "write -P 0xab 0 64k", "-c", "flush").EnsureSuccess();
        Assert.Equal("", stderr.ToString());
        foreach (var device in devices) device.AddRule(FaultRule.FailFrom(FaultOperations.Flush, 1));
        // The allocating write or its flush meets the failing fsync, whichever syncs first.
        var failed = QemuTools.QemuIo("-f", "raw", uri, "-c", "write -P 0xcd 64k 64k", "-c", "flush");
        Assert.NotEqual(0, failed.ExitCode);
        Assert.Contains("failed: Input/output error", failed.StdOut + failed.StdErr);
        var write = QemuTools.QemuIo("-f", "raw", uri, "-c", "write -P 0xee 1M 4k");
        Assert.NotEqual(0, write.ExitCode);
        Assert.Contains("write failed: Input/output error", write.StdOut + write.StdErr);

        var lines = stderr.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var fault = Assert.Single(lines);
        Assert.StartsWith($"q2a serve: image '{image}' turned read-only: ", fault);

        stop.SetResult();
        Assert.Equal(1, await run.WaitAsync(TimeSpan.FromSeconds(60)));
        output.WriteLine(stderr.ToString());
        lines = stderr.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        Assert.StartsWith($"q2a serve: image '{image}' was not closed clean: its journal is kept", lines[1]);
        Assert.True(File.Exists(image + ".journal"), "the journal holding the acknowledged writes was removed");
    }

    [QemuFact]
    public async Task A_clean_run_exits_0_and_leaves_a_plain_image()
    {
        var image = _dir.File("clean.qcow2");
        ImageCreator.Create(image, new Qcow2CreateOptions { Size = 4 * 1024 * 1024 });
        var settings = ServeSettings.From([image], null, 0, null, null, false, null, null, null);
        var (run, uri, stderr, stop) = await StartAsync(settings);
        QemuTools.QemuIo("-f", "raw", uri, "-c", "write -P 0xab 0 64k", "-c", "flush").EnsureSuccess();
        stop.SetResult();
        Assert.Equal(0, await run.WaitAsync(TimeSpan.FromSeconds(60)));
        Assert.Equal("", stderr.ToString());
        QemuTools.AssertCheckClean(image);
        Assert.False(File.Exists(image + ".journal"));
    }

    /// <summary>A writer that hands each line written to the test as it comes.</summary>
    private sealed class LineWriter : StringWriter
    {
        public Channel<string> Lines { get; } = Channel.CreateUnbounded<string>();

        public override Encoding Encoding => Encoding.UTF8;

        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            Lines.Writer.TryWrite(value ?? "");
        }

        public override Task WriteLineAsync(string? value)
        {
            WriteLine(value);
            return Task.CompletedTask;
        }
    }
}
