using System.Net.Sockets;
using System.Threading.Channels;
using Qcow2Actors.Nbd.Protocol;

namespace Qcow2Actors.Nbd.Tests.Protocol;

/// <summary>
/// The accept loop under failing accepts (EMFILE/ENFILE): it waits between attempts, doubling
/// up to a bound, starts over after a success, and logs the run once; it never spins.
/// </summary>
public sealed class AcceptLoopTests
{
    private static readonly TimeSpan Ms = TimeSpan.FromMilliseconds(1);

    [Fact]
    public async Task Failing_accepts_back_off_exponentially_to_a_bound_and_start_over_after_a_success()
    {
        var time = new ArmedTimerProvider();
        var log = new CollectingLoggerFactory();
        var accepted = Channel.CreateUnbounded<Socket>();
        int calls = 0;
        // 10 failures (EMFILE, then ENFILE), one client, 2 failures, then no more clients.
        const int firstRun = 10, secondRun = 2;
        using var stop = new CancellationTokenSource();
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        async ValueTask<Socket> Accept(CancellationToken token)
        {
            int call = Interlocked.Increment(ref calls);
            if (call <= firstRun) throw new SocketException((int)(call % 2 == 0 ? SocketError.TooManyOpenSockets : SocketError.NoBufferSpaceAvailable));
            if (call == firstRun + 1) return client;
            if (call <= firstRun + 1 + secondRun) throw new SocketException((int)SocketError.TooManyOpenSockets);
            await new TaskCompletionSource().Task.WaitAsync(token); // no more clients: park until stopped
            throw new InvalidOperationException("unreachable");
        }
        var loop = new AcceptLoop(Accept, s => accepted.Writer.TryWrite(s), time, log.CreateLogger("accept"));
        var run = loop.RunAsync(stop.Token);

        var expected = new[] { 10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000 };
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.Equal(expected[i] * Ms, await time.NextArmedAsync());
            // The loop is parked on its timer: exactly one accept per failure so far, none spinning.
            Assert.Equal(i + 1, Volatile.Read(ref calls));
            time.Advance(expected[i] * Ms);
        }
        Assert.Same(client, await accepted.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30)));
        // A success resets the delay.
        Assert.Equal(10 * Ms, await time.NextArmedAsync());
        Assert.Equal(firstRun + 2, Volatile.Read(ref calls));
        time.Advance(10 * Ms);
        Assert.Equal(20 * Ms, await time.NextArmedAsync());
        time.Advance(20 * Ms);

        await stop.CancelAsync();
        await run.WaitAsync(TimeSpan.FromSeconds(30));
        // 12 failures within 6 s of (fake) time: one line, not one per failure.
        var line = Assert.Single(log.Warnings);
        Assert.Contains("accepting a connection failed", line);
        Assert.Contains("connected clients are still served", line);
    }

    [Fact]
    public async Task A_stopped_loop_ends_while_it_waits_to_retry()
    {
        var time = new ArmedTimerProvider();
        using var stop = new CancellationTokenSource();
        var loop = new AcceptLoop(_ => throw new SocketException((int)SocketError.TooManyOpenSockets), _ => { }, time,
            new CollectingLoggerFactory().CreateLogger("accept"));
        var run = loop.RunAsync(stop.Token);
        Assert.Equal(10 * Ms, await time.NextArmedAsync());
        await stop.CancelAsync();
        await run.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(run.IsCompletedSuccessfully);
    }
}
