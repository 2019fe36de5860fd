using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Tests.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// A write that spans L2 tables hands the earlier tables' parts to their table actors and writes
/// owned clusters of the later ones in place. When an in-place part fails, the write must not end
/// (and give the caller its buffer back, which an NBD server returns to a shared pool) while a
/// table actor still reads the caller's bytes: they would then come from whoever rents that buffer next.
/// </summary>
public sealed class FailedWriteBufferTests : IDisposable
{
    // 512 B clusters: an L2 table (64 entries) covers 32 KiB, so a 1 KiB write can span two tables.
    private const int ClusterSize = 512;
    private const long TableCoverage = ClusterSize / 8 * ClusterSize;
    private const string Hocon = "qcow2actors.engine.checkpoint-interval = 0s";
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task A_write_whose_in_place_part_fails_ends_only_after_its_routed_table_parts_stop_reading_the_buffer()
    {
        var path = _dir.File("span.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 1 << 20, ClusterSize = ClusterSize });
        var probe = new Probe();
        var options = new Qcow2OpenOptions
        {
            ReadOnly = false,
            DeviceFactory = (p, w) => new ProbeDevice(FileBlockDevice.Open(p, w), probe),
        };
        await using var host = ImageHost.Create(Hocon);
        await using var image = await host.OpenAsync(path, options);

        // The first cluster of the second table becomes ours, so the next write to it goes in place.
        await image.WriteAsync(TableCoverage, Enumerable.Repeat((byte)0x11, ClusterSize).ToArray());
        await image.FlushAsync();

        // Last cluster of table 1 (unallocated: its table actor writes it) + first of table 2 (in place, fails).
        var data = new byte[2 * ClusterSize];
        data.AsSpan(0, ClusterSize).Fill(Probe.Routed);
        data.AsSpan(ClusterSize).Fill(Probe.InPlace);
        probe.Armed = true;
        var write = image.WriteAsync(TableCoverage - ClusterSize, data).AsTask();
        probe.Caller.TrySetResult(write);

        var returnedEarly = await probe.Sampled.Task.WaitAsync(Timeout);
        probe.Open.TrySetResult();
        await Assert.ThrowsAnyAsync<IOException>(() => write.WaitAsync(Timeout));
        Assert.False(returnedEarly, "WriteAsync ended while a table actor was still to write from the caller's buffer");
    }

    [Fact]
    public async Task A_cancelled_compressed_write_ends_only_after_its_table_operation_stops_reading_the_cluster()
    {
        const int cluster = 65536;
        var path = _dir.File("compressed.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 1 << 20, ClusterSize = cluster });
        var hold = new HoldAll();
        var options = new Qcow2OpenOptions
        {
            ReadOnly = false,
            DeviceFactory = (p, w) => new HoldAllDevice(FileBlockDevice.Open(p, w), hold),
        };
        await using var host = ImageHost.Create(Hocon);
        await using var image = await host.OpenAsync(path, options);

        // Every image write from now on waits: the table actor is busy (or its compressed write held)
        // while the compressed write's caller gives up.
        hold.Armed = true;
        var first = image.WriteAsync(cluster, Enumerable.Repeat((byte)0x22, cluster).ToArray()).AsTask();
        await hold.Entered.Task.WaitAsync(Timeout);
        using var cts = new CancellationTokenSource();
        var compressed = image.WriteCompressedAsync(0, Enumerable.Repeat((byte)0x33, cluster).ToArray(), cts.Token).AsTask();
        cts.Cancel();
        var endedEarly = compressed.IsCompleted;

        hold.Open.TrySetResult();
        await first.WaitAsync(Timeout);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => compressed.WaitAsync(Timeout));
        Assert.False(endedEarly, "the cancelled compressed write ended while its table operation had yet to read the cluster");
    }

    private sealed class HoldAll
    {
        public volatile bool Armed;
        public readonly TaskCompletionSource Entered = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public readonly TaskCompletionSource Open = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private sealed class HoldAllDevice(IBlockDevice inner, HoldAll hold) : DelegatingDevice(inner)
    {
        protected override async ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
        {
            if (hold.Armed)
            {
                hold.Entered.TrySetResult();
                await hold.Open.Task.ConfigureAwait(false);
            }
            await base.WriteCoreAsync(buffer, offset, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Orders the two device writes of the spanning write and records what the caller saw.</summary>
    private sealed class Probe
    {
        public const byte Routed = 0xaa;
        public const byte InPlace = 0xbb;

        public volatile bool Armed;
        public readonly TaskCompletionSource<Task> Caller = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public readonly TaskCompletionSource InPlaceWaiting = new(TaskCreationOptions.RunContinuationsAsynchronously);
        // Continuations inline: completing it runs the in-place write's failure, and with it the
        // caller's unwinding, on the completing thread before TrySetResult returns.
        public readonly TaskCompletionSource RoutedHeld = new();
        public readonly TaskCompletionSource<bool> Sampled = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public readonly TaskCompletionSource Open = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private sealed class ProbeDevice(IBlockDevice inner, Probe probe) : DelegatingDevice(inner)
    {
        protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
        {
            if (probe.Armed && IsAll(buffer.Span, Probe.InPlace))
            {
                var failing = FailAfterRoutedHeldAsync();
                probe.InPlaceWaiting.TrySetResult();
                return failing;
            }
            if (probe.Armed && IsAll(buffer.Span, Probe.Routed)) return HoldRoutedAsync(buffer, offset, cancellationToken);
            return base.WriteCoreAsync(buffer, offset, cancellationToken);
        }

        private async ValueTask FailAfterRoutedHeldAsync()
        {
            await probe.RoutedHeld.Task.ConfigureAwait(false);
            throw new EndOfStreamException("injected: the in-place write failed");
        }

        private async ValueTask HoldRoutedAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
        {
            var caller = await probe.Caller.Task.ConfigureAwait(false);
            await probe.InPlaceWaiting.Task.ConfigureAwait(false);
            probe.RoutedHeld.TrySetResult();
            // The failure has unwound as far as it goes without waiting: a caller that is done now
            // did not wait for this write, which has not read the buffer yet.
            probe.Sampled.TrySetResult(caller.IsCompleted);
            await probe.Open.Task.ConfigureAwait(false);
            await base.WriteCoreAsync(buffer, offset, cancellationToken).ConfigureAwait(false);
        }

        private static bool IsAll(ReadOnlySpan<byte> span, byte value) => span.Length > 0 && span.IndexOfAnyExcept(value) < 0;
    }
}
