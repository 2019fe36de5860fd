using Akka.Actor;
using Akka.Cluster.Sharding;
using Akka.Event;
using Qcow2Actors.Host.Cluster.Forwarding;
using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Cluster;

/// <summary>
/// The cluster-sharded entity of one image (entity id <c>TENANT/IMAGE</c>): while it lives on a node, that node
/// owns the image: it has it open (replaying from the shared journal what a dead owner made durable), one owner
/// life (<see cref="Forwarding.OwnerLife"/>) per start. Every node exports the image (<see cref="Forwarding.ClusterExport"/>);
/// the other nodes forward their clients' requests here as <see cref="Forwarding.ForwardedRequest"/>s, which run
/// concurrently on the image (each answered when its own I/O completes, not one at a time). Sharding keeps one
/// entity per id in the cluster and, with remember-entities, starts it again on a survivor when its node dies. On
/// hand-off (a node leaving) the entity answers new requests "moved", waits for those in flight and closes the image
/// clean before it stops, so the next owner's open finds the lock free and nothing lost.
/// </summary>
internal sealed class ImageEntity : ReceiveActor, IWithUnboundedStash
{
    /// <summary>Starts the entity (and so serving) if it is not running; nothing else.</summary>
    public sealed record Serve;

    /// <summary>The hand-off stop message: close, then stop.</summary>
    public sealed record Release;

    private sealed record Served;

    private sealed record Released;

    private readonly HostRegistry _registry;
    private readonly string _entityId;
    private readonly string _tenant;
    private readonly string _image;
    private readonly string _self;
    private readonly ILoggingAdapter _log = Context.GetLogger();

    public ImageEntity(string entityId, HostRegistry registry)
    {
        _registry = registry;
        _entityId = entityId;
        (_tenant, _image) = Split(entityId);
        _self = Akka.Cluster.Cluster.Get(Context.System).SelfAddress.ToString();
        Starting();
    }

    public IStash Stash { get; set; } = null!;

    /// <summary>Opening: forwarded requests wait (stashed) until the image is served here.</summary>
    private void Starting()
    {
        Receive<Serve>(_ => { });
        Receive<ForwardedRequest>(_ => Stash.Stash());
        Receive<Served>(_ =>
        {
            _log.Info("image {0} is served by this node", _entityId);
            Become(Serving);
            Stash.UnstashAll();
        });
        Receive<Status.Failure>(f =>
        {
            // Stopped, not restarted at once: sharding starts a remembered entity again after its back-off, so an
            // image whose lock is still held elsewhere (the old owner not yet gone) is retried, not spun on.
            _log.Warning("image {0} cannot be served here: {1}", _entityId, f.Cause.Message);
            Become(Refusing);
            Stash.UnstashAll();
            Context.Stop(Self);
        });
        Receive<Release>(_ => BeginRelease());
    }

    private void Serving()
    {
        Receive<Serve>(_ => { });
        Receive<ForwardedRequest>(request =>
        {
            if (_registry.ClusterExportOf(_entityId) is { } export) export.ServeForwardedAsync(request).PipeTo(Sender);
            else Sender.Tell(ForwardedReply.Moved(_self, $"image {_entityId} has no export on {_self}"));
        });
        Receive<Release>(_ => BeginRelease());
    }

    /// <summary>Handing off or failed: every request is told to ask again (the next owner answers it).</summary>
    private void Refusing()
    {
        Receive<Serve>(_ => { });
        Receive<ForwardedRequest>(_ => Sender.Tell(ForwardedReply.Moved(_self, $"image {_entityId} is being handed off by {_self}")));
        Receive<Served>(_ => { });
        Receive<Status.Failure>(_ => { });
        Receive<Release>(_ => { });
        Receive<Released>(_ => Context.Stop(Self));
    }

    private void BeginRelease()
    {
        Become(Refusing);
        Stash.UnstashAll();
        // Requests already running finish on the image (the registry waits for them) before it closes.
        ReleaseAsync().PipeTo(Self, success: () => new Released());
    }

    private async Task ReleaseAsync()
    {
        try
        {
            await _registry.ReleaseClusterImageAsync(_tenant, _image);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            _log.Warning("image {0}: release on hand-off: {1}", _entityId, ex.Message);
        }
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
