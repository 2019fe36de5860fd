using Akka.Actor;
using Akka.Cluster;
using Microsoft.Extensions.Logging;

namespace Qcow2Actors.Host.Cluster;

/// <summary>One host log line per membership change this node sees (up, unreachable, reachable again, downed, removed).</summary>
internal sealed class ClusterEventLog : ReceiveActor
{
    public ClusterEventLog(ILogger log)
    {
        var cluster = Akka.Cluster.Cluster.Get(Context.System);
        Receive<ClusterEvent.MemberUp>(e => log.LogInformation("cluster: member up {Address}", e.Member.Address));
        Receive<ClusterEvent.UnreachableMember>(e => log.LogWarning("cluster: member unreachable {Address}", e.Member.Address));
        Receive<ClusterEvent.ReachableMember>(e => log.LogInformation("cluster: member reachable again {Address}", e.Member.Address));
        Receive<ClusterEvent.MemberDowned>(e => log.LogWarning("cluster: member downed {Address}", e.Member.Address));
        Receive<ClusterEvent.MemberRemoved>(e => log.LogInformation("cluster: member removed {Address}", e.Member.Address));
        Receive<ClusterEvent.IMemberEvent>(_ => { });
        Receive<ClusterEvent.CurrentClusterState>(_ => { });
        cluster.Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsEvents,
            typeof(ClusterEvent.IMemberEvent), typeof(ClusterEvent.IReachabilityEvent));
    }

    protected override void PostStop() => Akka.Cluster.Cluster.Get(Context.System).Unsubscribe(Self);

    public static Props Props(ILogger log) => Akka.Actor.Props.Create(() => new ClusterEventLog(log));
}
