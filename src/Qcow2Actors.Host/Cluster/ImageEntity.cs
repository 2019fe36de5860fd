using Akka.Actor;
using Akka.Cluster.Sharding;
using Akka.Event;
using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Cluster;

/// <summary>
/// The cluster-sharded entity of one image (entity id <c>TENANT/IMAGE</c>): while it lives on a node, that node
/// owns the image: it has it open (replaying from the shared journal what a dead owner made durable) and serves its
/// export <c>TENANT/IMAGE</c> on its own NBD port. Sharding keeps one entity per id in the cluster and, with
/// remember-entities, starts it again on a survivor when its node dies. On hand-off (a node leaving) the entity
/// removes the export and closes the image clean before it stops, so the next owner's open finds the lock free.
/// </summary>
internal sealed class ImageEntity : ReceiveActor
{
    /// <summary>Starts the entity (and so serving) if it is not running; nothing else.</summary>
    public sealed record Serve;

    /// <summary>The hand-off stop message: close, then stop.</summary>
    public sealed record Release;

    private sealed record Served;

    private readonly HostRegistry _registry;
    private readonly string _tenant;
    private readonly string _image;
    private readonly ILoggingAdapter _log = Context.GetLogger();

    public ImageEntity(string entityId, HostRegistry registry)
    {
        _registry = registry;
        (_tenant, _image) = Split(entityId);
        Receive<Serve>(_ => { });
        Receive<Served>(_ => _log.Info("image {0} is served by this node", entityId));
        Receive<Status.Failure>(f =>
        {
            // Stopped, not restarted at once: sharding starts a remembered entity again after its back-off, so an
            // image whose lock is still held elsewhere (the old owner not yet gone) is retried, not spun on.
            _log.Warning("image {0} cannot be served here: {1}", entityId, f.Cause.Message);
            Context.Stop(Self);
        });
        ReceiveAsync<Release>(async _ =>
        {
            try
            {
                await _registry.ReleaseClusterImageAsync(_tenant, _image);
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                _log.Warning("image {0}: release on hand-off: {1}", entityId, ex.Message);
            }
            Context.Stop(Self);
        });
    }

    protected override void PreStart() =>
        _registry.ServeClusterImageAsync(_tenant, _image).PipeTo(Self, success: () => new Served(), failure: ex => new Status.Failure(ex));

    /// <summary>TENANT/IMAGE into its two names.</summary>
    public static (string Tenant, string Image) Split(string entityId)
    {
        int slash = entityId.IndexOf('/', StringComparison.Ordinal);
        return slash <= 0 ? throw new ArgumentException($"entity id '{entityId}' is not TENANT/IMAGE") : (entityId[..slash], entityId[(slash + 1)..]);
    }

    public static Props Props(string entityId, HostRegistry registry) =>
        Akka.Actor.Props.Create(() => new ImageEntity(entityId, registry));
}

/// <summary>
/// Entity id and shard of the region's messages: the base class unwraps <see cref="ShardingEnvelope"/> and
/// remember-entities' start messages itself (shard = a stable hash of the id, the same on every node); nothing else
/// is sent to the region.
/// </summary>
internal sealed class ImageMessageExtractor(int shards) : HashCodeMessageExtractor(shards)
{
    public override string? EntityId(object message) => null;
}
