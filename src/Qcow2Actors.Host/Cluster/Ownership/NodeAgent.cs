using Akka.Actor;
using Akka.Cluster.Sharding;
using Microsoft.Extensions.Logging;
using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Cluster.Ownership;

/// <summary>
/// One per node (<c>/user/q2a-node-agent</c>): tells other nodes which cluster images this node has open and the NBD
/// URIs of their exports, and un-serves an image whose entity runs here.
/// </summary>
/// <remarks>
/// Un-serving passivates the entity through its shard (a <see cref="Passivate"/> sent to the shard on the entity's
/// behalf): the shard hands the entity <see cref="ImageEntity.Release"/> (export removed, image checkpointed and
/// closed clean) and, once it has stopped, forgets it in remember-entities, so no node starts it again. A stop without
/// passivation would make sharding restart it.
/// </remarks>
internal sealed class NodeAgent : ReceiveActor
{
    /// <summary>The agent's name under /user on every node.</summary>
    public const string Name = "q2a-node-agent";

    private sealed record Identified(UnserveRequest Request, IActorRef ReplyTo);
    private sealed record GaveUp(IActorRef Entity);

    private readonly Dictionary<IActorRef, (string Id, IActorRef ReplyTo, ICancelable Timer)> _stopping = [];

    public NodeAgent(HostRegistry registry, IActorRef region, int shards, TimeSpan stopTimeout, ILogger log)
    {
        var extractor = new ImageMessageExtractor(shards);
        Receive<NodeReportRequest>(_ => Sender.Tell(new NodeReport(
            [.. registry.ClusterOwnedImages().Select(id => new ServedImage(id, registry.UriOf(id)))])));
        Receive<UnserveRequest>(request =>
        {
            // The entity's actor is the shard's child named after the escaped entity id (sharding's naming).
            string shard = extractor.ShardId(request.EntityId, null);
            var path = region.Path / shard / Uri.EscapeDataString(request.EntityId);
            Context.ActorSelection(path).Tell(new Identify(new Identified(request, Sender)));
        });
        Receive<ActorIdentity>(identity =>
        {
            if (identity.MessageId is not Identified (var request, var replyTo)) return;
            if (identity.Subject is not { } entity)
            {
                replyTo.Tell(new UnserveReply(request.EntityId, Found: false, Error: null));
                return;
            }
            if (_stopping.ContainsKey(entity))
            {
                replyTo.Tell(new UnserveReply(request.EntityId, Found: true, Error: "an un-serve of it is already in progress"));
                return;
            }
            log.LogInformation("cluster: un-serving image {Image}: its entity is passivated, the image closed", request.EntityId);
            Context.Watch(entity);
            var timer = Context.System.Scheduler.ScheduleTellOnceCancelable(stopTimeout, Self, new GaveUp(entity), Self);
            _stopping[entity] = (request.EntityId, replyTo, timer);
            Context.ActorSelection(entity.Path.Parent).Tell(new Passivate(new ImageEntity.Release()), entity);
        });
        Receive<Terminated>(t =>
        {
            if (!_stopping.Remove(t.ActorRef, out var stopping)) return;
            stopping.Timer.Cancel();
            log.LogInformation("cluster: image {Image} un-served", stopping.Id);
            stopping.ReplyTo.Tell(new UnserveReply(stopping.Id, Found: true, Error: null));
        });
        Receive<GaveUp>(g =>
        {
            if (!_stopping.Remove(g.Entity, out var stopping)) return;
            Context.Unwatch(g.Entity);
            stopping.ReplyTo.Tell(new UnserveReply(stopping.Id, Found: true,
                Error: $"its entity did not stop within {stopTimeout.TotalSeconds:F0} s (a hand-off or a request for it is in progress)"));
        });
    }

    /// <summary>This agent's path on the node at <paramref name="address"/>.</summary>
    public static ActorPath PathOn(Address address) => new RootActorPath(address) / "user" / Name;

    public static Props Props(HostRegistry registry, IActorRef region, int shards, TimeSpan stopTimeout, ILogger log) =>
        Akka.Actor.Props.Create(() => new NodeAgent(registry, region, shards, stopTimeout, log));
}
