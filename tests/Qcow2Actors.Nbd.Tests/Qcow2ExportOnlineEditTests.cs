using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Nbd.Exports;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Nbd.Tests;

/// <summary>
/// A served image changed under its clients: an internal snapshot taken while qemu-io writes
/// over NBD (no client error), and a resize that the next connection sees.
/// </summary>
public sealed class Qcow2ExportOnlineEditTests : IAsyncLifetime
{
    private const int KiB = 1024, MiB = 1024 * KiB;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);
    private readonly TempDir _dir = new();
    private ImageHost _host = null!;

    public Task InitializeAsync()
    {
        _host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s", name: "online-edit-tests");
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _host.DisposeAsync();
        _dir.Dispose();
    }

    /// <summary>Passes everything to the export and completes <see cref="WritesSeen"/> waits as writes arrive.</summary>
    private sealed class CountingExport(INbdExport inner) : DelegatingExport(inner)
    {
        private readonly object _lock = new();
        private readonly List<(int Count, TaskCompletionSource Done)> _waiters = [];
        private int _writes;

        public int Writes => Volatile.Read(ref _writes);

        public override async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken)
        {
            await base.WriteAsync(offset, data, fua, cancellationToken);
            int n = Interlocked.Increment(ref _writes);
            lock (_lock)
            {
                foreach (var w in _waiters.Where(w => w.Count <= n).ToList())
                {
                    w.Done.TrySetResult();
                    _waiters.Remove(w);
                }
            }
        }

        /// <summary>Completes once <paramref name="count"/> writes have completed in all.</summary>
        public Task WritesSeen(int count)
        {
            var tcs = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            lock (_lock)
            {
                if (Writes >= count) tcs.TrySetResult();
                else _waiters.Add((count, tcs));
            }
            return tcs.Task;
        }
    }

    [NbdFact]
    public async Task A_snapshot_taken_while_qemu_io_writes_over_nbd_costs_the_client_nothing()
    {
        var path = _dir.File("served.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 16 * MiB });
        await using var export = await Qcow2Export.OpenAsync(path, "disk", new Qcow2OpenOptions { ReadOnly = false }, _host);
        await export.WriteAsync(0, Enumerable.Repeat((byte)0x11, MiB).ToArray(), fua: true, default);
        var counting = new CountingExport(export);
        await using var server = await TestServers.StartTcpAsync(counting);

        // 600 writes of 16 KiB, one per 64 KiB cluster in [2M, 14M) and round again, each read back
        // with -P at once, a flush every 50: qemu-io stops at the first failed request or mismatch.
        var commands = new List<string>();
        for (int i = 0; i < 600; i++)
        {
            long offset = 2L * MiB + i % 192 * 64L * KiB;
            int pattern = i % 250 + 1;
            commands.Add("-c");
            commands.Add($"write -P {pattern} {offset} 16k");
            commands.Add("-c");
            commands.Add($"read -P {pattern} {offset} 16k");
            if (i % 50 == 49) { commands.Add("-c"); commands.Add("flush"); }
        }
        var io = Task.Run(() => QemuTools.QemuIo(["-f", "raw", .. commands, server.GetUri("disk")]));

        await counting.WritesSeen(100).WaitAsync(Timeout);
        var snapshot = await export.Image.CreateSnapshotAsync("during-io").AsTask().WaitAsync(Timeout);
        int afterSnapshot = counting.Writes;
        // The client went on after the snapshot: the edit paused it, it did not end it.
        await counting.WritesSeen(afterSnapshot + 50).WaitAsync(Timeout);
        var r = await io.WaitAsync(Timeout);
        Assert.True(r.ExitCode == 0 && !(r.StdOut + r.StdErr).Contains("failed", StringComparison.OrdinalIgnoreCase), r.StdOut + r.StdErr);
        Assert.True(afterSnapshot < 600, $"the snapshot finished after qemu-io's last write ({afterSnapshot})");
        Assert.Equal("during-io", snapshot.Name);
        await TestServers.WaitForNoConnectionsAsync(server);
        await server.StopAsync(TimeSpan.FromSeconds(5));
        await export.DisposeAsync();

        QemuTools.AssertCheckClean(path);
        Assert.Contains("during-io", QemuTools.QemuImg("snapshot", "-l", path).EnsureSuccess().StdOut, StringComparison.Ordinal);
        var copy = _dir.File("snap.qcow2");
        QemuTools.QemuImg("convert", "-O", "qcow2", "-l", "snapshot.name=during-io", path, copy).EnsureSuccess();
        var before = QemuTools.QemuIo("-r", "-c", "read -P 0x11 0 1M", copy);
        Assert.True(before.ExitCode == 0 && !before.StdOut.Contains("Pattern verification failed", StringComparison.Ordinal), before.StdOut + before.StdErr);
    }

    [NbdFact]
    public async Task A_resized_served_image_shows_its_new_size_to_the_next_connection()
    {
        var path = _dir.File("grow.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 4 * MiB });
        await using var export = await Qcow2Export.OpenAsync(path, "disk", new Qcow2OpenOptions { ReadOnly = false }, _host);
        await using var server = await TestServers.StartTcpAsync(export);
        Assert.Equal("4194304", QemuTools.Run("nbdinfo", "--size", server.GetUri("disk")).EnsureSuccess().StdOut.Trim());

        await export.Image.ResizeAsync(64 * MiB);
        Assert.Equal("67108864", QemuTools.Run("nbdinfo", "--size", server.GetUri("disk")).EnsureSuccess().StdOut.Trim());
        // The new space is usable over NBD at once.
        QemuTools.QemuIo("-f", "raw", server.GetUri("disk"), "-c", "write -P 0x7e 60M 64k", "-c", "read -P 0x7e 60M 64k").EnsureSuccess();
        await TestServers.WaitForNoConnectionsAsync(server);
        await server.StopAsync(TimeSpan.FromSeconds(5));
        await export.DisposeAsync();
        QemuTools.AssertCheckClean(path);
        var io = QemuTools.QemuIo("-r", "-c", "read -P 0x7e 60M 64k", path);
        Assert.True(io.ExitCode == 0 && !io.StdOut.Contains("Pattern verification failed", StringComparison.Ordinal), io.StdOut + io.StdErr);
    }
}
