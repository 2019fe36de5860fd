using System.Net;
using System.Net.Sockets;
using Akka.Actor;
using Akka.Cluster;
using Akka.Remote;
using Microsoft.Extensions.Logging;

namespace Qcow2Actors.Host.Cluster;

/// <summary>
/// Downs a member whose process is gone, as soon as its remoting connection drops and its remoting port refuses a
/// new TCP connection, instead of waiting for the failure detector (about 3.6 s) and the split-brain resolver's
/// stable-after (<c>down-refused-nodes</c>, on by default).
/// </summary>
/// <remarks>
/// A refused connection (a TCP reset) means no process listens on the port: a live node, even one paused by SIGSTOP
/// or a long GC, keeps its listening socket and the kernel completes the handshake for it, so a pause is never taken
/// for a death; a dropped packet (a partition) is a timeout, not a refusal, and is left to the failure detector and
/// the resolver. The node downs the member only while it and the other members it reaches are the side keep-majority
/// would keep (<see cref="KeepMajoritySide"/>), so a node cut off alone downs nobody. Safety does not rest on
/// this: a node wrongly downed has its journals fenced and its OFD locks still refuse a second writer.
/// </remarks>
internal sealed class RefusedNodeDowning : ReceiveActor
{
    internal static readonly TimeSpan ProbeTimeout = TimeSpan.FromMilliseconds(500);
    internal static readonly TimeSpan ProbePause = TimeSpan.FromMilliseconds(100);
    private const int Probes = 2;

    private sealed record Probed(Address Node, bool Refused);

    private readonly Akka.Cluster.Cluster _cluster = Akka.Cluster.Cluster.Get(Context.System);
    private readonly HashSet<Address> _probing = [];
    private readonly TimeProvider _time;

    public RefusedNodeDowning(ILogger log, TimeProvider time)
    {
        _time = time;
        Receive<DisassociatedEvent>(e => Probe(e.RemoteAddress));
        Receive<AssociationErrorEvent>(e => Probe(e.RemoteAddress));
        Receive<Probed>(r =>
        {
            _probing.Remove(r.Node);
            if (!r.Refused) return;
            var state = _cluster.State;
            var member = state.Members.FirstOrDefault(m => m.Address == r.Node);
            if (member is null || member.Status != MemberStatus.Up) return;
            if (!KeepMajoritySide.Holds(state, _cluster.SelfAddress, r.Node)) return;
            log.LogWarning("cluster: member {Address} refuses connections on its remoting port (its process is gone): downing it", r.Node);
            _cluster.Down(r.Node);
            // Quarantining its incarnation marks it terminated in the cluster's reachability at once (what Akka does
            // on removal anyway), so the leader removes it without waiting for the failure detector.
            if (((ExtendedActorSystem)Context.System).Provider is IRemoteActorRefProvider remote) remote.Quarantine(r.Node, member.UniqueAddress.Uid);
        });
        Context.System.EventStream.Subscribe(Self, typeof(DisassociatedEvent));
        Context.System.EventStream.Subscribe(Self, typeof(AssociationErrorEvent));
    }

    private void Probe(Address node)
    {
        if (node.Host is not { } host || node.Port is not { } port || node == _cluster.SelfAddress || !_probing.Add(node)) return;
        if (!_cluster.State.Members.Any(m => m.Address == node && m.Status == MemberStatus.Up))
        {
            _probing.Remove(node);
            return;
        }
        RefusesAsync(host, port, _time).PipeTo(Self, success: refused => new Probed(node, refused), failure: _ => new Probed(node, false));
    }

    /// <summary>
    /// True when every probe's TCP connection to HOST:PORT is refused (nothing listens there); the pause between
    /// probes and each probe's timeout run on <paramref name="time"/>.
    /// </summary>
    internal static async Task<bool> RefusesAsync(string host, int port, TimeProvider time)
    {
        if (!IPAddress.TryParse(host, out var address)) return false;
        for (int probe = 0; probe < Probes; probe++)
        {
            if (probe > 0) await Task.Delay(ProbePause, time).ConfigureAwait(false);
            using var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            using var timeout = new CancellationTokenSource(ProbeTimeout, time);
            try
            {
                await socket.ConnectAsync(new IPEndPoint(address, port), timeout.Token).ConfigureAwait(false);
                return false; // something listens: the node (or its successor) lives
            }
            catch (SocketException ex) when (ex.SocketErrorCode == SocketError.ConnectionRefused)
            {
                // refused: probe again, so one odd reset does not down a node
            }
            catch (Exception ex) when (ex is SocketException or OperationCanceledException)
            {
                return false; // a timeout or another error says nothing sure
            }
        }
        return true;
    }

    protected override void PostStop() => Context.System.EventStream.Unsubscribe(Self);

    public static Props Props(ILogger log, TimeProvider time) => Akka.Actor.Props.Create(() => new RefusedNodeDowning(log, time));
}
