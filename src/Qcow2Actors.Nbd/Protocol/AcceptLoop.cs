using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace Qcow2Actors.Nbd.Protocol;

/// <summary>
/// Accepts clients until stopped. A failing accept (EMFILE/ENFILE when the process or system is
/// out of file descriptors, ENOBUFS, a client that reset first) is retried after a delay that
/// doubles per consecutive failure up to <see cref="MaxRetryDelay"/> and resets on success, so an
/// exhausted fd table costs a few wake-ups a second instead of a spinning core and an exception
/// per spin; connected clients are served meanwhile. Failures are logged through a throttle.
/// </summary>
internal sealed class AcceptLoop(
    Func<CancellationToken, ValueTask<Socket>> accept,
    Action<Socket> admit,
    TimeProvider time,
    ILogger log)
{
    /// <summary>Delay after the first failure of a run.</summary>
    public static readonly TimeSpan FirstRetryDelay = TimeSpan.FromMilliseconds(10);

    /// <summary>Longest delay between two accept attempts while they keep failing.</summary>
    public static readonly TimeSpan MaxRetryDelay = TimeSpan.FromSeconds(1);

    private readonly LogThrottle _throttle = new(time, TimeSpan.FromSeconds(10));

    /// <summary>Runs until <paramref name="stopping"/> fires or the listener is disposed; never throws.</summary>
    public async Task RunAsync(CancellationToken stopping)
    {
        var delay = TimeSpan.Zero;
        while (!stopping.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await accept(stopping);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            catch (SocketException ex)
            {
                delay = delay == TimeSpan.Zero ? FirstRetryDelay : TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, MaxRetryDelay.Ticks));
                if (_throttle.TryEnter(out var more))
                    log.LogWarning("NBD: accepting a connection failed ({Error}); retrying in {Delay} ms, connected clients are still served{More}",
                        ex.Message, (long)delay.TotalMilliseconds, LogThrottle.More(more));
                try
                {
                    await Task.Delay(delay, time, stopping);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                continue;
            }
            delay = TimeSpan.Zero;
            admit(socket);
        }
    }
}
