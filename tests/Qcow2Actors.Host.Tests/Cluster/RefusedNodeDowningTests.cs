using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Qcow2Actors.Host.Cluster;

namespace Qcow2Actors.Host.Tests.Cluster;

/// <summary>
/// The probe behind <c>down-refused-nodes</c>: a port nothing listens on refuses (the node's process is gone); a
/// listening port, even one whose process never accepts (paused), does not.
/// </summary>
public sealed class RefusedNodeDowningTests
{
    /// <summary>Records the timers asked of it: the pause between probes passes at once, probe timeouts run on the system clock.</summary>
    private sealed class RecordingClock : TimeProvider
    {
        public ConcurrentQueue<TimeSpan> Timers { get; } = new();

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            Timers.Enqueue(dueTime);
            return System.CreateTimer(callback, state, dueTime == RefusedNodeDowning.ProbePause ? TimeSpan.Zero : dueTime, period);
        }
    }

    [Fact]
    public async Task A_port_nothing_listens_on_refuses_so_its_node_is_gone()
    {
        int port;
        using (var listener = new TcpListener(IPAddress.Loopback, 0))
        {
            listener.Start();
            port = ((IPEndPoint)listener.LocalEndpoint).Port;
        } // closed: the port is free again
        var clock = new RecordingClock();
        Assert.True(await RefusedNodeDowning.RefusesAsync("127.0.0.1", port, clock));
        // Two probes, each with its timeout, and the pause between them: all on the clock it was given.
        Assert.Equal([RefusedNodeDowning.ProbeTimeout, RefusedNodeDowning.ProbePause, RefusedNodeDowning.ProbeTimeout], clock.Timers);
    }

    [Fact]
    public async Task A_port_still_listening_but_never_accepting_like_a_paused_node_does_not_refuse()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start(); // never accepts: the kernel completes the handshake, as for a SIGSTOPped process
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        Assert.False(await RefusedNodeDowning.RefusesAsync("127.0.0.1", port, TimeProvider.System));
    }
}
