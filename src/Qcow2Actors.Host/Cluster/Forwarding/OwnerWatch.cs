using System.Collections.Concurrent;
using Akka.Actor;
using Akka.Cluster;

namespace Qcow2Actors.Host.Cluster.Forwarding;

/// <summary>
/// What this node knows of the other nodes' reachability, for proxy exports: a request waiting on an owner is
/// given up (and sent again) as soon as that owner's node turns unreachable or leaves, rather than at its timeout.
/// </summary>
internal sealed class OwnerWatch
{
    /// <summary>A node's state as the watch sees it.</summary>
    public enum NodeState
    {
        /// <summary>A member this node can reach (or one it has not heard of).</summary>
        Reachable,

        /// <summary>Unreachable, not yet removed: messages to it are likely lost.</summary>
        Unreachable,

        /// <summary>Removed from the cluster (downed, or left): its shards live elsewhere now.</summary>
        Removed,
    }

    private readonly ConcurrentDictionary<string, (NodeState State, CancellationTokenSource Gone)> _nodes = new(StringComparer.Ordinal);

    /// <summary>The state of the node at <paramref name="address"/>.</summary>
    public NodeState StateOf(string address) => _nodes.TryGetValue(address, out var n) ? n.State : NodeState.Reachable;

    /// <summary>A token cancelled when the node at <paramref name="address"/> turns unreachable or is removed.</summary>
    public CancellationToken GoneToken(string address) =>
        _nodes.GetOrAdd(address, _ => (NodeState.Reachable, new CancellationTokenSource())).Gone.Token;

    /// <summary>Records a state change (the watcher actor calls this).</summary>
    public void Set(string address, NodeState state)
    {
        while (true)
        {
            var old = _nodes.GetOrAdd(address, _ => (NodeState.Reachable, new CancellationTokenSource()));
            if (old.State == NodeState.Removed || old.State == state) return; // a removed address never comes back (a restart has a new uid, same address: it is a new member)
#pragma warning disable CA2000 // kept in the map for the node's lifetime (a handful of nodes); cancelled, never disposed, as tokens may still be linked to it
            var gone = state == NodeState.Reachable && old.Gone.IsCancellationRequested ? new CancellationTokenSource() : old.Gone;
#pragma warning restore CA2000
            if (!_nodes.TryUpdate(address, (state, gone), old)) continue;
            if (state != NodeState.Reachable) old.Gone.Cancel();
            return;
        }
    }

    /// <summary>A member with this address joined again (a restarted node): reachable again.</summary>
    public void Rejoined(string address) => _nodes.TryRemove(address, out _);

    /// <summary>The actor that feeds the watch from cluster events.</summary>
    public static Props Props(OwnerWatch watch) => Akka.Actor.Props.Create(() => new Watcher(watch));

    private sealed class Watcher : ReceiveActor
    {
        public Watcher(OwnerWatch watch)
        {
            var cluster = Akka.Cluster.Cluster.Get(Context.System);
            Receive<ClusterEvent.MemberUp>(e => watch.Rejoined(e.Member.Address.ToString()));
            Receive<ClusterEvent.UnreachableMember>(e => watch.Set(e.Member.Address.ToString(), NodeState.Unreachable));
            Receive<ClusterEvent.ReachableMember>(e => watch.Set(e.Member.Address.ToString(), NodeState.Reachable));
            Receive<ClusterEvent.MemberRemoved>(e => watch.Set(e.Member.Address.ToString(), NodeState.Removed));
            Receive<ClusterEvent.IMemberEvent>(_ => { });
            Receive<ClusterEvent.IReachabilityEvent>(_ => { });
            cluster.Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsEvents,
                typeof(ClusterEvent.IMemberEvent), typeof(ClusterEvent.IReachabilityEvent));
        }

        protected override void PostStop() => Akka.Cluster.Cluster.Get(Context.System).Unsubscribe(Self);
    }
}
