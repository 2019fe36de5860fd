using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Metrics;
using Qcow2Actors.Engine.Tests.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Metrics;

/// <summary>
/// The engine's per-image instruments: journal bytes and flush durations move with flushes,
/// checkpoints are counted, L2 cache hits and misses add up to the lookups of a known access
/// pattern, the allocated-clusters gauge follows allocation and discard, and faults are counted by kind.
/// </summary>
public sealed class EngineMetricsTests : HostedImageTests
{
    private const int Cluster = 65536;

    private static string UniqueName() => "image-" + Guid.NewGuid().ToString("N");

    [QemuFact]
    public async Task Flushes_and_checkpoints_move_the_journal_flush_and_checkpoint_instruments()
    {
        var name = UniqueName();
        using var recorder = MetricRecorder.ForTag(EngineMetrics.MeterName, EngineMetrics.ImageTag, name);
        var path = Dir.File("f.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 64 << 20, ClusterSize = Cluster });
        var options = new Qcow2OpenOptions { ReadOnly = false, MetricsName = name, MetricTags = [new("tenant", "acme")] };
        await using (var image = await Host.OpenAsync(path, options))
        {
            await image.WriteAsync(0, new byte[Cluster].Select((_, i) => (byte)i).ToArray());
            Assert.Equal(0, recorder.Sum(EngineMetrics.JournalAppended)); // records wait for the flush
            await image.FlushAsync();
            var journal = recorder.Sum(EngineMetrics.JournalAppended);
            Assert.True(journal > 0, "an allocating write's records reached the journal without being counted");
            Assert.Equal(1, recorder.Count(EngineMetrics.FlushDuration));

            // Nothing new to journal: the flush is timed, the journal does not grow.
            await image.FlushAsync();
            Assert.Equal(2, recorder.Count(EngineMetrics.FlushDuration));
            Assert.Equal(journal, recorder.Sum(EngineMetrics.JournalAppended));
            Assert.All(recorder.Of(EngineMetrics.FlushDuration), m => Assert.InRange(m.Value, 0, 60));

            await image.CheckpointAsync();
            Assert.Equal(1, recorder.Sum(EngineMetrics.Checkpoints));
        }
        // Closing checkpoints once more.
        Assert.Equal(2, recorder.Sum(EngineMetrics.Checkpoints));
        Assert.Equal(0, recorder.Sum(EngineMetrics.Faults));
        Assert.All(recorder.All, m => Assert.Equal("acme", m.Tag("tenant")));
        QemuTools.AssertCheckClean(path);
    }

    [Fact]
    public async Task L2_cache_hits_and_misses_add_up_to_the_lookups_of_a_known_read_pattern()
    {
        var path = Dir.File("l2.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 1L << 30, ClusterSize = Cluster });
        // One L2 table covers 512 MiB with 64 KiB clusters: data in both halves makes two tables.
        const long secondTable = 512L << 20;
        await using (var image = await Host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false }))
        {
            foreach (var offset in new[] { 0, Cluster, 2L * Cluster, secondTable })
                await image.WriteAsync(offset, new byte[Cluster].Select(_ => (byte)0x5a).ToArray());
        }

        var name = UniqueName();
        using var recorder = MetricRecorder.ForTag(EngineMetrics.MeterName, EngineMetrics.ImageTag, name);
        await using (var image = await Qcow2Image.OpenAsync(path, new Qcow2OpenOptions { MetricsName = name }))
        {
            var buffer = new byte[4096];
            // Each read lies in one cluster: one lookup. The first read of each table misses, the rest hit
            // (an unallocated cluster under an allocated table is a lookup too).
            foreach (var offset in new[] { 0, Cluster, 2L * Cluster, 256L << 20, secondTable, secondTable + 4096, 768L << 20 })
                await image.ReadAsync(offset, buffer);
        }
        Assert.Equal(2, recorder.Sum(EngineMetrics.L2CacheMisses));
        Assert.Equal(5, recorder.Sum(EngineMetrics.L2CacheHits));
    }

    [LinuxFact]
    public async Task A_read_pinned_in_the_host_file_counts_its_lookup_as_an_L2_hit()
    {
        var path = Dir.File("pin.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 16 << 20, ClusterSize = Cluster });
        await using (var writer = await Host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false }))
            await writer.WriteAsync(0, Pattern(4 * Cluster)); // one allocation: one host run

        var name = UniqueName();
        using var recorder = MetricRecorder.ForTag(EngineMetrics.MeterName, EngineMetrics.ImageTag, name);
        await using (var image = await Qcow2Image.OpenAsync(path, new Qcow2OpenOptions { MetricsName = name }))
        {
            // Loads the table and brings the bytes into the page cache, which a pin needs.
            await image.ReadAsync(0, new byte[4 * Cluster]);
            double hits = recorder.Sum(EngineMetrics.L2CacheHits), misses = recorder.Sum(EngineMetrics.L2CacheMisses);
            using (var pin = image.TryPinFileRange(0, 4 * Cluster)) Assert.NotNull(pin);
            Assert.Equal(hits + 1, recorder.Sum(EngineMetrics.L2CacheHits));
            // A range that cannot be pinned is read the ordinary way, which counts its own lookups.
            Assert.Null(image.TryPinFileRange(8L * Cluster, Cluster));
            Assert.Equal(hits + 1, recorder.Sum(EngineMetrics.L2CacheHits));
            Assert.Equal(misses, recorder.Sum(EngineMetrics.L2CacheMisses));
        }
    }

    [QemuFact]
    public async Task Allocated_clusters_follow_allocation_and_discard()
    {
        var name = UniqueName();
        using var recorder = MetricRecorder.ForTag(EngineMetrics.MeterName, EngineMetrics.ImageTag, name);
        var path = Dir.File("a.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 64 << 20, ClusterSize = Cluster });
        // Every cluster of a new image is in use (header, refcount table and block, L1).
        long initial = new FileInfo(path).Length / Cluster;
        await using (var image = await Host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false, MetricsName = name }))
        {
            Assert.Equal(initial, Observe(recorder));
            await image.WriteAsync(0, Pattern(Cluster));
            Assert.Equal(initial + 2, Observe(recorder)); // the data cluster and its new L2 table
            await image.WriteAsync(3L * Cluster, Pattern(2 * Cluster));
            Assert.Equal(initial + 4, Observe(recorder));
            await image.DiscardAsync(3L * Cluster, Cluster);
            Assert.Equal(initial + 3, Observe(recorder));
        }
        // Closed: the gauge no longer reports it.
        recorder.Observe();
        Assert.Equal(4, recorder.Count(EngineMetrics.AllocatedClusters));
        QemuTools.AssertCheckClean(path);
    }

    [Fact]
    public async Task Faults_are_counted_by_kind()
    {
        var name = UniqueName();
        using var recorder = MetricRecorder.ForTag(EngineMetrics.MeterName, EngineMetrics.ImageTag, name);
        var path = Dir.File("fault.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 4 << 20, ClusterSize = Cluster });
        bool failFlush = false;
        var options = new Qcow2OpenOptions
        {
            ReadOnly = false,
            MetricsName = name,
            DeviceFactory = (p, writable) => new FlushFaultDevice(FileBlockDevice.Open(p, writable), () => Volatile.Read(ref failFlush)),
        };
        var image = await Host.OpenAsync(path, options);
        await image.WriteAsync(0, Pattern(Cluster));
        Volatile.Write(ref failFlush, true);
        await Assert.ThrowsAsync<IOException>(async () => await image.FlushAsync());
        Assert.Equal(1, recorder.Sum(EngineMetrics.Faults, (EngineMetrics.KindTag, "read_only")));
        Assert.Equal(0, recorder.Count(EngineMetrics.FlushDuration)); // only successful flushes are timed
        await image.DisposeAsync();
        Assert.Equal(1, recorder.Sum(EngineMetrics.Faults, (EngineMetrics.KindTag, "unclean_close")));
        Assert.Equal(2, recorder.Sum(EngineMetrics.Faults));
    }

    /// <summary>Reads the gauge now and returns this image's value.</summary>
    private static long Observe(MetricRecorder recorder)
    {
        recorder.Observe();
        return (long)recorder.Of(EngineMetrics.AllocatedClusters)[^1].Value;
    }

    private static byte[] Pattern(int length) => Enumerable.Range(0, length).Select(i => (byte)(i * 7 + 1)).ToArray();

    /// <summary>A host file whose fsync fails on demand.</summary>
    private sealed class FlushFaultDevice(IBlockDevice inner, Func<bool> failFlush) : DelegatingDevice(inner)
    {
        protected override ValueTask FlushCoreAsync(CancellationToken cancellationToken)
        {
            if (failFlush()) throw new IOException("Input/output error (simulated EIO on fsync)");
            return Inner.FlushAsync(cancellationToken);
        }
    }
}
