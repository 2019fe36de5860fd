using Akka.Actor;
using Microsoft.Extensions.Time.Testing;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Write;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// The engine's timers run on the host's TimeProvider: the checkpoint interval, idle passivation
/// of table actors, and idle images giving their cached tables back. A fake clock moves them;
/// nothing here waits on the wall clock.
/// </summary>
public sealed class EngineTimerTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);
    // Incompatible feature bit 0 (dirty) in the header, at byte 72.
    private const long IncompatibleFeaturesOffset = 72;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>
    /// Table counts from the image actor, once it has handled every message sent before (timer
    /// ticks included) and no table actor is still being passivated.
    /// </summary>
    private static Task<ImageActor.TableCounts> Inspect(ImageHost host, Qcow2Image image)
    {
        var reply = new TaskCompletionSource<ImageActor.TableCounts>(TaskCreationOptions.RunContinuationsAsynchronously);
        host.System.ActorSelection(image.WriteContext!.Journal.Path.Parent).Tell(new ImageActor.InspectTables(reply));
        return reply.Task.WaitAsync(Timeout);
    }

    /// <summary>Moves the clock <paramref name="by"/> in steps, letting the image act on each step's ticks first.</summary>
    private static async Task<ImageActor.TableCounts> Advance(FakeTimeProvider time, ImageHost host, Qcow2Image image, TimeSpan by, TimeSpan step)
    {
        var counts = await Inspect(host, image);
        for (var moved = TimeSpan.Zero; moved < by; moved += step)
        {
            time.Advance(step);
            counts = await Inspect(host, image);
        }
        return counts;
    }

    private static byte[] Bytes(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    /// <summary>A host on <paramref name="time"/> whose clean table actors stop after 10 s idle (sweeps every 5 s), nothing else timed.</summary>
    private static ImageHost TableIdleHost(FakeTimeProvider time) => ImageHost.Create("""
        qcow2actors.engine.table-idle-timeout = 10s
        qcow2actors.engine.cache-idle-timeout = 0s
        qcow2actors.engine.checkpoint-interval = 0s
        """, timeProvider: time);

    private static bool DirtyOnDisk(string path) => (ImageFileBytes.ReadU64(path, IncompatibleFeaturesOffset) & 1) != 0;

    [Fact]
    public async Task A_dirty_image_is_checkpointed_when_the_interval_passes_on_the_engine_clock()
    {
        var time = new FakeTimeProvider();
        var path = _dir.File("interval.qcow2");
        await using var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 30s", timeProvider: time);
        await using var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = 16 << 20, ClusterSize = 65536 });
        var data = Bytes(300_000, 1);
        await image.WriteAsync(0, data);
        await image.FlushAsync();
        Assert.True(DirtyOnDisk(path), "a flush with new metadata leaves the journal pending");

        await Advance(time, host, image, TimeSpan.FromSeconds(29), TimeSpan.FromSeconds(29));
        Assert.True(DirtyOnDisk(path), "checkpointed before the interval passed");
        Assert.True(image.WriteContext!.BitsOnDisk);

        // The tick queues the checkpoint; Inspect is answered only after it ran.
        await Advance(time, host, image, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));
        Assert.False(DirtyOnDisk(path), "not checkpointed once the interval passed");
        Assert.False(image.WriteContext!.BitsOnDisk);
        var back = new byte[data.Length];
        await image.ReadAsync(0, back);
        Assert.Equal(data, back);
    }

    [Fact]
    public async Task Clean_table_actors_stop_once_idle_for_the_timeout_and_dirty_ones_stay()
    {
        var time = new FakeTimeProvider();
        var path = _dir.File("idle-tables.qcow2");
        await using var host = TableIdleHost(time);
        // 4 KiB clusters: one L2 table covers 2 MiB.
        var model = new byte[16 << 20];
        await using var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = model.Length, ClusterSize = 4096 });
        for (int t = 0; t < 4; t++)
        {
            var data = Bytes(10_000, t);
            data.CopyTo(model, t * (2 << 20));
            await image.WriteAsync(t * (2 << 20), data);
        }
        await image.CheckpointAsync(); // clean: nothing keeps them alive but the timeout
        Assert.Equal(4, (await Inspect(host, image)).LiveTableActors);

        // The sweep runs every 5 s: at 5 s the tables have been idle less than 10 s.
        var counts = await Advance(time, host, image, TimeSpan.FromSeconds(9), TimeSpan.FromSeconds(3));
        Assert.Equal(4, counts.LiveTableActors);
        counts = await Advance(time, host, image, TimeSpan.FromSeconds(6), TimeSpan.FromSeconds(3));
        Assert.Equal(0, counts.LiveTableActors);

        // A dirty table's only copy is its actor's until a checkpoint: it outlives the timeout. (An
        // allocating write: overwrites of clusters already allocated bypass the table actor.)
        var again = Bytes(5000, 9);
        again.CopyTo(model, 1 << 20);
        await image.WriteAsync(1 << 20, again);
        counts = await Advance(time, host, image, TimeSpan.FromSeconds(30), TimeSpan.FromSeconds(5));
        Assert.Equal(1, counts.LiveTableActors);
        var back = new byte[model.Length];
        await image.ReadAsync(0, back);
        Assert.True(model.AsSpan().SequenceEqual(back), "read-back differs after passivation");
    }

    [Fact]
    public async Task A_table_written_without_the_image_actor_stays_live_while_used_and_stops_once_idle()
    {
        var time = new FakeTimeProvider();
        var path = _dir.File("idle-direct.qcow2");
        await using var host = TableIdleHost(time);
        var model = new byte[4 << 20];
        await using var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = model.Length, ClusterSize = 4096 });
        async Task Write(int cluster, int seed)
        {
            var data = Bytes(4096, seed);
            data.CopyTo(model, cluster * 4096);
            await image.WriteAsync(cluster * 4096, data);
            await image.CheckpointAsync(); // clean: only use keeps the table actor alive
        }

        await Write(0, 1); // through the image actor, which starts the table actor and opens its route
        Assert.Equal(1, (await Advance(time, host, image, TimeSpan.FromSeconds(9), TimeSpan.FromSeconds(3))).LiveTableActors);
        await Write(7, 2); // a new cluster of the same table: sent on the route, the image actor never sees it
        // Sweeps at 10 s and 15 s: idle 1 s and 6 s since that write (10 s and 15 s since the first).
        Assert.Equal(1, (await Advance(time, host, image, TimeSpan.FromSeconds(9), TimeSpan.FromSeconds(3))).LiveTableActors);
        Assert.Equal(0, (await Advance(time, host, image, TimeSpan.FromSeconds(6), TimeSpan.FromSeconds(3))).LiveTableActors);

        await Write(9, 3); // its route closed with it: through the image actor again, to a new table actor
        var back = new byte[model.Length];
        await image.ReadAsync(0, back);
        Assert.True(model.AsSpan().SequenceEqual(back), "read-back differs");
    }

    [Fact]
    public async Task Dirty_tables_past_the_l2_cache_size_are_checkpointed_without_a_timer_or_budget()
    {
        var time = new FakeTimeProvider();
        var path = _dir.File("over-cache.qcow2");
        // No interval, no record threshold in reach, no host budget: only the cache size can ask for the checkpoint.
        await using var host = ImageHost.Create("""
            qcow2actors.engine.checkpoint-interval = 0s
            qcow2actors.engine.l2-cache-size = 4
            qcow2actors.host.metadata-cache = 0
            """, timeProvider: time);
        // 4 KiB clusters: one L2 table covers 2 MiB; 8 tables, each made dirty by one allocating write.
        var model = new byte[16 << 20];
        await using var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = model.Length, ClusterSize = 4096 });
        for (int t = 0; t < 8; t++)
        {
            var data = Bytes(4096, t);
            data.CopyTo(model, t * (2 << 20));
            await image.WriteAsync(t * (2 << 20), data);
        }

        // Each table actor pins its table before its write completes; the one past 4 has asked for the checkpoint by then.
        // The image actor queues that checkpoint behind the first Inspect; the second is answered after it ran.
        await Inspect(host, image);
        var counts = await Inspect(host, image);
        Assert.True(counts.PinnedTables <= 4, $"{counts.PinnedTables} dirty tables stayed pinned past an L2 cache of 4");
        var back = new byte[model.Length];
        await image.ReadAsync(0, back);
        Assert.True(model.AsSpan().SequenceEqual(back), "read-back differs after the checkpoint");
    }

    [QemuFact]
    public async Task An_idle_image_gives_its_cached_tables_back_and_reads_them_again()
    {
        var time = new FakeTimeProvider();
        var path = _dir.File("idle-image.qcow2");
        await using (var host = ImageHost.Create("""
            qcow2actors.engine.cache-idle-timeout = 30s
            qcow2actors.engine.table-idle-timeout = 1h
            qcow2actors.engine.checkpoint-interval = 0s
            """, timeProvider: time))
        {
            // 4 KiB clusters, 64 MiB: 32 L2 tables of 2 MiB each.
            const int Tables = 32;
            var model = new byte[64 << 20];
            await using var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = model.Length, ClusterSize = 4096 });
            var rng = new Random(3);
            for (int t = 0; t < Tables; t++)
            {
                var data = Bytes(rng.Next(1, 20_000), t);
                long offset = (long)t * (2 << 20) + rng.Next(0, 1 << 20);
                data.CopyTo(model, offset);
                await image.WriteAsync(offset, data);
            }
            await image.CheckpointAsync();
            var back = new byte[model.Length];
            await image.ReadAsync(0, back);
            Assert.True(model.AsSpan().SequenceEqual(back), "read-back differs");
            var counts = await Inspect(host, image);
            Assert.Equal(Tables, counts.CachedTables);
            Assert.Equal(Tables, counts.LiveTableActors);

            // Sweeps every 15 s: the first sees the activity above, the idle time counts from there.
            counts = await Advance(time, host, image, TimeSpan.FromSeconds(30), TimeSpan.FromSeconds(15));
            Assert.Equal(Tables, counts.CachedTables);
            counts = await Advance(time, host, image, TimeSpan.FromSeconds(15), TimeSpan.FromSeconds(15));
            Assert.Equal(new ImageActor.TableCounts(0, 0, 0), counts);

            // A table changed since the last checkpoint is pinned and stays until one writes it.
            var late = Bytes(3000, 99);
            late.CopyTo(model, 1800 << 10); // not allocated yet in table 0: the table actor maps it
            await image.WriteAsync(1800 << 10, late);
            counts = await Advance(time, host, image, TimeSpan.FromSeconds(60), TimeSpan.FromSeconds(15));
            Assert.Equal(new ImageActor.TableCounts(1, 1, 1), counts);
            await image.CheckpointAsync();
            counts = await Advance(time, host, image, TimeSpan.FromSeconds(15), TimeSpan.FromSeconds(15));
            Assert.Equal(new ImageActor.TableCounts(0, 0, 0), counts);

            Array.Clear(back);
            await image.ReadAsync(0, back);
            Assert.True(model.AsSpan().SequenceEqual(back), "read-back differs after the tables were given back");
            Assert.Equal(Tables, (await Inspect(host, image)).CachedTables);
        }
        QemuTools.AssertCheckClean(path);
    }
}
