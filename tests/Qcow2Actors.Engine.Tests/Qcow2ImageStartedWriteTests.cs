using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Tests.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests;

/// <summary>
/// <see cref="Qcow2Image.TryStartWrite"/> hands a write whose first cluster needs a new mapping whole to the image's
/// actors, so the caller never waits on the device; it declines (starting nothing) where the write belongs on
/// <see cref="Qcow2Image.WriteAsync"/>.
/// </summary>
public sealed class Qcow2ImageStartedWriteTests : IDisposable
{
    private const int ClusterSize = 4096;
    // With 4 KiB clusters an L2 table maps 512 clusters: 2 MiB of guest space.
    private const long TableSpan = 512L * ClusterSize;
    private const string Hocon = "qcow2actors.engine.checkpoint-interval = 0s";
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [QemuFact]
    public async Task A_write_from_a_new_cluster_into_an_owned_one_of_the_next_table_starts_while_the_device_holds_every_write_and_lands_whole()
    {
        var path = _dir.File("started.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 4 * TableSpan, ClusterSize = ClusterSize });
        var gate = new DeviceGate();
        var options = new Qcow2OpenOptions { ReadOnly = false, DeviceFactory = (p, w) => new GatedDevice(FileBlockDevice.Open(p, w), gate) };
        var data = Enumerable.Range(0, 2 * ClusterSize).Select(i => (byte)(i * 7 + 1)).ToArray();
        long offset = TableSpan - ClusterSize;
        await using (var host = ImageHost.Create(Hocon))
        await using (var image = await host.OpenAsync(path, options))
        {
            // The second table's cluster is the image's own already: WriteAsync would overwrite it in place, on the caller's thread.
            await image.WriteAsync(TableSpan, Enumerable.Repeat((byte)0xee, ClusterSize).ToArray());
            gate.Close();
            // Every device write now blocks its thread until the gate opens: had the caller written anything
            // itself, this call would not return (the gate gives up after Bound and says so).
            ValueTask write;
            using (gate.Caller()) Assert.True(image.TryStartWrite(offset, data, default, out write));
            await gate.Reached.Task.WaitAsync(Bound);
            Assert.False(write.IsCompleted);
            gate.Open();
            await write.AsTask().WaitAsync(Bound);
            Assert.False(gate.BlockedTheCaller, "a device write ran on the thread that started the write");

            var back = new byte[data.Length];
            await image.ReadAsync(offset, back);
            Assert.Equal(data, back);
        }

        AssertCleanAndReads(path, $"read -P 1 {offset} 1", $"read -P 0 0 {offset}");
    }

    [QemuFact]
    public async Task A_write_to_a_cluster_the_image_owns_is_declined_and_left_to_WriteAsync()
    {
        var path = _dir.File("owned.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = TableSpan, ClusterSize = ClusterSize });
        var first = Enumerable.Repeat((byte)0xaa, ClusterSize).ToArray();
        await using (var host = ImageHost.Create(Hocon))
        await using (var image = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false }))
        {
            Assert.True(image.TryStartWrite(0, first, default, out var allocating));
            await allocating.AsTask().WaitAsync(Bound);

            // Now the cluster is ours: an overwrite (also one that runs on into an unallocated cluster) goes in place.
            var second = Enumerable.Repeat((byte)0xbb, 2 * ClusterSize).ToArray();
            Assert.False(image.TryStartWrite(ClusterSize / 2, second, default, out var declined));
            Assert.True(declined.IsCompletedSuccessfully);
            var back = new byte[ClusterSize];
            await image.ReadAsync(0, back);
            Assert.Equal(first, back);
            await image.WriteAsync(ClusterSize / 2, second);
        }
        AssertCleanAndReads(path, $"read -P 0xaa 0 {ClusterSize / 2}", $"read -P 0xbb {ClusterSize / 2} {2 * ClusterSize}");
    }

    [QemuFact]
    public async Task Read_only_and_closed_images_and_ranges_off_the_disk_start_nothing()
    {
        var path = _dir.File("declined.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = TableSpan, ClusterSize = ClusterSize });
        var data = new byte[ClusterSize];
        await using (var host = ImageHost.Create(Hocon))
        {
            await using (var readOnly = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = true }))
                Assert.False(readOnly.TryStartWrite(0, data, default, out _));

            var image = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false });
            Assert.False(image.TryStartWrite(TableSpan - ClusterSize / 2, data, default, out _));
            Assert.False(image.TryStartWrite(-ClusterSize, data, default, out _));
            Assert.False(image.TryStartWrite(0, ReadOnlyMemory<byte>.Empty, default, out _));
            await image.DisposeAsync();
            Assert.False(image.TryStartWrite(0, data, default, out _));
        }
        QemuTools.AssertCheckClean(path);
        var map = QemuTools.QemuImg("map", "--output=json", path);
        Assert.DoesNotContain("\"data\": true", map.StdOut);
    }

    /// <summary>The image checks clean and qemu-io's pattern reads pass (its exit code says so; "read N/N bytes" does not).</summary>
    private static void AssertCleanAndReads(string path, params string[] reads)
    {
        QemuTools.AssertCheckClean(path);
        var read = QemuTools.QemuIo([.. reads.SelectMany(r => new[] { "-c", r }), path]);
        Assert.True(read.ExitCode == 0 && !read.StdOut.Contains("fail", StringComparison.OrdinalIgnoreCase), read.StdOut + read.StdErr);
    }

    /// <summary>
    /// While closed, holds every device write on its thread (at most <see cref="Bound"/>) and says whether one ran
    /// inside the caller's call (<see cref="Caller"/>).
    /// </summary>
    private sealed class DeviceGate
    {
        private readonly ManualResetEventSlim _open = new(true);
        private volatile int _caller = -1;
        public TaskCompletionSource Reached { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public volatile bool BlockedTheCaller;

        public void Close() => _open.Reset();

        public void Open() => _open.Set();

        /// <summary>Marks this thread as the caller's until disposed (after the call, the pool may run the engine on it).</summary>
        public IDisposable Caller()
        {
            _caller = Environment.CurrentManagedThreadId;
            return new CallerScope(this);
        }

        private sealed class CallerScope(DeviceGate gate) : IDisposable
        {
            public void Dispose() => gate._caller = -1;
        }

        public void Pass()
        {
            if (_open.IsSet) return;
            if (Environment.CurrentManagedThreadId == _caller) BlockedTheCaller = true;
            Reached.TrySetResult();
            _open.Wait(Bound);
        }
    }

    private sealed class GatedDevice(IBlockDevice inner, DeviceGate gate) : DelegatingDevice(inner)
    {
        protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
        {
            gate.Pass();
            return base.WriteCoreAsync(buffer, offset, cancellationToken);
        }
    }
}
