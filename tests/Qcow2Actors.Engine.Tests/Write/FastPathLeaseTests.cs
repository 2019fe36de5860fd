using Akka.Actor;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Tests.Device;
using Qcow2Actors.Engine.Write;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// The lock-free in-place write path leases its host cluster until its device write completes:
/// a discard that frees the cluster meanwhile does not let it be punched or allocated again
/// before the stale write has landed, so that write can never overwrite someone else's data.
/// </summary>
public sealed class FastPathLeaseTests : IDisposable
{
    private const int ClusterSize = 65536;
    private const string Hocon = "qcow2actors.engine.checkpoint-interval = 0s";
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [QemuFact]
    public async Task A_discarded_cluster_with_an_in_place_write_in_flight_is_not_reused_until_that_write_lands()
    {
        var path = _dir.File("lease.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 8 << 20, ClusterSize = ClusterSize });
        var gate = new WriteGate();
        var options = new Qcow2OpenOptions
        {
            ReadOnly = false,
            DeviceFactory = (p, w) => new GatedDevice(FileBlockDevice.Open(p, w), gate),
        };
        var oldData = Enumerable.Repeat((byte)0xaa, ClusterSize).ToArray();
        var newData = Enumerable.Repeat((byte)0xcc, ClusterSize).ToArray();
        long stale;
        long reused;
        await using (var host = ImageHost.Create(Hocon))
        await using (var image = await host.OpenAsync(path, options))
        {
            var ctx = image.WriteContext!;
            await image.WriteAsync(0, oldData);
            await image.FlushAsync();
            stale = await HostOffsetAsync(image, 0);

            // An overwrite of the cluster we own takes the fast path; its device write is held.
            gate.Arm(stale);
            var inFlight = image.WriteAsync(0, Enumerable.Repeat((byte)0xbb, 4096).ToArray()).AsTask();
            await gate.Entered.WaitAsync(Timeout);
            Assert.Equal(1, ctx.Leases.Count);

            // The guest discards the range and makes that durable: the cluster is freed, but its
            // release (punch, then allocatable) waits for the lease.
            await image.DiscardAsync(0, ClusterSize);
            await image.FlushAsync();
            // Either the release is held by the lease, or (without one) it ran: the refcount actor
            // answers this barrier only after it finished the release the flush sent it.
            var barrier = new TaskCompletionSource<ulong[]>(TaskCreationOptions.RunContinuationsAsynchronously);
            ctx.Refcounts.Tell(new GetRefcounts([], barrier));
            await Task.WhenAny(ctx.Leases.FirstWait, barrier.Task).WaitAsync(Timeout);
            Assert.True(ctx.Leases.FirstWait.IsCompleted, "the freed cluster was released while a write to it was in flight");
            Assert.Equal(1, ctx.Allocator!.QuarantineCount);

            // A new allocating write must not get the stale write's cluster.
            await image.WriteAsync(ClusterSize, newData);
            reused = await HostOffsetAsync(image, ClusterSize);
            Assert.NotEqual(stale, reused);

            gate.Open();
            await inFlight.WaitAsync(Timeout);
            await image.FlushAsync();
            // The checkpoint reaches the refcount actor after the release the lease held back: a barrier.
            await image.CheckpointAsync();

            var back = new byte[ClusterSize];
            await image.ReadAsync(ClusterSize, back);
            Assert.Equal(newData, back);
            await image.ReadAsync(0, back);
            Assert.True(back.AsSpan().IndexOfAnyExcept((byte)0) < 0, "the discarded cluster does not read as zeros");
            Assert.Equal(0, ctx.Leases.Count);
            Assert.Equal(0, ctx.Allocator!.QuarantineCount);
            Assert.Equal([0ul], ctx.Allocator.Get([stale / ClusterSize]));
        }

        QemuTools.AssertCheckClean(path);
        var read = QemuTools.QemuIo("-c", $"read -P 0xcc {ClusterSize} {ClusterSize}", "-c", $"read -P 0 0 {ClusterSize}", path);
        Assert.True(read.ExitCode == 0 && !read.StdOut.Contains("fail", StringComparison.OrdinalIgnoreCase), read.StdOut + read.StdErr);
    }

    private static async Task<long> HostOffsetAsync(Qcow2Image image, long guest)
    {
        await foreach (var extent in image.GetMapAsync(guest, ClusterSize))
            return extent.Offset ?? throw new InvalidOperationException($"guest {guest} has no host offset");
        throw new InvalidOperationException("empty map");
    }

    /// <summary>Holds the first asynchronous write to one host cluster until <see cref="Open"/>.</summary>
    private sealed class WriteGate
    {
        private readonly TaskCompletionSource _entered = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _open = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private long _armed = -1;

        public Task Entered => _entered.Task;

        public void Arm(long hostCluster) => Interlocked.Exchange(ref _armed, hostCluster);

        public void Open() => _open.TrySetResult();

        public Task? TryHold(long offset) =>
            Interlocked.Read(ref _armed) is var armed && armed >= 0 && offset >= armed && offset < armed + ClusterSize
            && Interlocked.CompareExchange(ref _armed, -1, armed) == armed
                ? Hold()
                : null;

        private Task Hold()
        {
            _entered.TrySetResult();
            return _open.Task;
        }
    }

    private sealed class GatedDevice(IBlockDevice inner, WriteGate gate) : DelegatingDevice(inner)
    {
        protected override async ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
        {
            if (gate.TryHold(offset) is { } held) await held.ConfigureAwait(false);
            await base.WriteCoreAsync(buffer, offset, cancellationToken).ConfigureAwait(false);
        }
    }
}
