using Akka.Actor;
using Akka.Configuration;

namespace Qcow2Actors.Engine.Tests;

/// <summary>
/// Blocking file I/O runs on the engine's own I/O threads: never on a pool thread (Akka's default
/// dispatcher runs on the .NET pool), every blocking call at once up to the configured bound, and
/// no more threads than that.
/// </summary>
public sealed class BlockingIoTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);

    [Theory]
    [InlineData(true, 6)] // the engine's reference configuration, bound overridden
    [InlineData(false, BlockingIo.DefaultMaxThreads)] // a system configured without it: the default bound
    public async Task Blocking_calls_all_run_at_once_on_threads_of_their_own_up_to_the_bound(bool withReference, int bound)
    {
        var config = withReference
            ? ConfigurationFactory.ParseString($"qcow2actors.io-threads = {bound}").WithFallback(ImageHost.ReferenceConfig)
            : ConfigurationFactory.ParseString("akka.loglevel = OFF");
        var system = ActorSystem.Create("blocking-io", config);
        var io = BlockingIo.For(system);
        using var release = new ManualResetEventSlim();
        using var started = new CountdownEvent(bound);
        int onPool = 0, running = 0, peak = 0;
        try
        {
            // One more call than the bound, each blocking until released: exactly the bound run at once.
            var calls = Enumerable.Range(0, bound + 1).Select(_ => io.Run(() =>
            {
                if (Thread.CurrentThread.IsThreadPoolThread) Interlocked.Increment(ref onPool);
                int now = Interlocked.Increment(ref running);
                InterlockedMax(ref peak, now);
                if (!started.IsSet) started.Signal();
                release.Wait(Timeout);
                Interlocked.Decrement(ref running);
            })).ToList();
            Assert.True(await Task.Run(() => started.Wait(Timeout)), $"only {bound - started.CurrentCount} of {bound} blocking calls started");
            Assert.Equal(bound, Volatile.Read(ref running));
            release.Set();
            await Task.WhenAll(calls).WaitAsync(Timeout);
            Assert.Equal(0, onPool);
            Assert.Equal(bound, peak);
            Assert.Equal(bound, io.Threads);
        }
        finally
        {
            release.Set();
            await system.Terminate();
        }
    }

    private static void InterlockedMax(ref int target, int value)
    {
        int seen = Volatile.Read(ref target);
        while (value > seen)
        {
            int prior = Interlocked.CompareExchange(ref target, value, seen);
            if (prior == seen) return;
            seen = prior;
        }
    }

    [Fact]
    public async Task Calls_one_after_another_reuse_one_thread_and_carry_results_and_errors()
    {
        var system = ActorSystem.Create("blocking-io-error", ImageHost.ReferenceConfig);
        try
        {
            var io = BlockingIo.For(system);
            for (int i = 0; i < 20; i++) Assert.Equal(i, await io.Run(() => i).WaitAsync(Timeout));
            var error = await Assert.ThrowsAsync<IOException>(() => io.Run(() => throw new IOException("fdatasync failed")).WaitAsync(Timeout));
            Assert.Equal("fdatasync failed", error.Message);
            // A call's result is published just before its thread turns idle, so the next call can
            // start a second thread now and then; 21 calls one after another must still not need 21.
            Assert.InRange(io.Threads, 1, 3);
        }
        finally
        {
            await system.Terminate();
        }
    }

    [Fact]
    public async Task After_the_actor_system_stops_a_call_fails_instead_of_hanging()
    {
        var system = ActorSystem.Create("blocking-io-stopped", ImageHost.ReferenceConfig);
        var io = BlockingIo.For(system);
        await system.Terminate();
        var error = await Assert.ThrowsAsync<IOException>(() => io.Run(() => 1).WaitAsync(Timeout));
        Assert.Contains("stopped", error.Message);
    }

    [Fact]
    public async Task One_image_whose_calls_hang_holds_at_most_its_lane_and_another_images_call_runs_at_once()
    {
        var system = ActorSystem.Create("blocking-io-lanes",
            ConfigurationFactory.ParseString("qcow2actors { io-threads = 8, io-threads-per-image = 3 }").WithFallback(ImageHost.ReferenceConfig));
        var hung = BlockingIo.ForImage(system);
        var healthy = BlockingIo.ForImage(system);
        using var release = new ManualResetEventSlim();
        using var started = new CountdownEvent(3);
        int running = 0, peak = 0;
        try
        {
            // Ten calls of one image block (a hung disk): three hold a thread, seven wait in its lane.
            var stuck = Enumerable.Range(0, 10).Select(i => hung.Run(() =>
            {
                InterlockedMax(ref peak, Interlocked.Increment(ref running));
                if (!started.IsSet) started.Signal();
                release.Wait(Timeout);
                Interlocked.Decrement(ref running);
                return i;
            })).ToList();
            Assert.True(await Task.Run(() => started.Wait(Timeout)), "the hung image's first calls did not start");
            Assert.Equal(3, hung.LaneRunning);

            // The other image's calls run at once, one after another and several together.
            for (int i = 0; i < 5; i++) Assert.Equal(i, await healthy.Run(() => i).WaitAsync(Timeout));
            Assert.Equal(new[] { 0, 1, 2, 3 }, await Task.WhenAll(Enumerable.Range(0, 4).Select(i => healthy.Run(() => i))).WaitAsync(Timeout));
            Assert.Equal(3, Volatile.Read(ref running));
            Assert.InRange(healthy.Threads, 4, 8); // one pool: the hung image's three threads plus the healthy one's

            // The disk comes back: every queued call runs, in order, never more than three at once.
            release.Set();
            Assert.Equal(Enumerable.Range(0, 10), await Task.WhenAll(stuck).WaitAsync(Timeout));
            Assert.Equal(3, peak);
            Assert.Equal(0, hung.LaneRunning);
        }
        finally
        {
            release.Set();
            await system.Terminate();
        }
    }

    [Fact]
    public async Task Calls_waiting_in_a_lane_when_the_actor_system_stops_fail_instead_of_hanging()
    {
        var system = ActorSystem.Create("blocking-io-lane-stopped",
            ConfigurationFactory.ParseString("qcow2actors.io-threads-per-image = 1").WithFallback(ImageHost.ReferenceConfig));
        var io = BlockingIo.ForImage(system);
        using var release = new ManualResetEventSlim();
        using var started = new ManualResetEventSlim();
        var first = io.Run(() =>
        {
            started.Set();
            release.Wait(Timeout);
            return 1;
        });
        var queued = io.Run(() => 2);
        Assert.True(await Task.Run(() => started.Wait(Timeout)));
        await system.Terminate();
        release.Set();
        Assert.Equal(1, await first.WaitAsync(Timeout)); // the call already running finishes
        var error = await Assert.ThrowsAsync<IOException>(() => queued.WaitAsync(Timeout));
        Assert.Contains("stopped", error.Message);
    }
}
