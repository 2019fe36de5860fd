using Akka.Configuration;

namespace Qcow2Actors.Engine.Tests;

/// <summary>
/// The thread pool's minimum starts low and grows ahead of device calls held on their threads, so calls hung on one
/// disk never leave the pool without threads it can start at once (the rest of the engine runs on it).
/// </summary>
public sealed class ThreadPoolFloorTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    [Fact]
    public void The_minimum_grows_ahead_of_device_calls_held_on_their_threads_and_nested_calls_count_once()
    {
        ThreadPoolFloor.Apply(ConfigurationFactory.ParseString("qcow2actors.thread-pool-floor = 256"));
        Assert.True(ThreadPoolFloor.Current >= ThreadPoolFloor.Base);

        const int Held = 40; // more than the base: the minimum must have grown past them
        using var entered = new CountdownEvent(Held);
        using var release = new ManualResetEventSlim();
        var threads = Enumerable.Range(0, Held).Select(_ => new Thread(() =>
        {
            ThreadPoolFloor.Enter();
            ThreadPoolFloor.Enter(); // a decorator's inner device: the same thread, counted once
            try
            {
                entered.Signal();
                release.Wait(Timeout);
            }
            finally
            {
                ThreadPoolFloor.Exit();
                ThreadPoolFloor.Exit();
            }
        }) { IsBackground = true }).ToList();
        threads.ForEach(t => t.Start());
        try
        {
            Assert.True(entered.Wait(Timeout));
            // Other tests' device calls may be counted too: at least ours are, once each, and the minimum stays ahead.
            int blocked = ThreadPoolFloor.Blocked;
            Assert.InRange(blocked, Held, Held + 64);
            Assert.True(ThreadPoolFloor.Current >= Held + ThreadPoolFloor.Slack, $"minimum {ThreadPoolFloor.Current} with {blocked} calls held");
            ThreadPool.GetMinThreads(out int workers, out _);
            Assert.True(workers >= ThreadPoolFloor.Current, $"runtime minimum {workers}, set {ThreadPoolFloor.Current}");
        }
        finally
        {
            release.Set();
            threads.ForEach(t => t.Join(Timeout));
        }
    }
}
