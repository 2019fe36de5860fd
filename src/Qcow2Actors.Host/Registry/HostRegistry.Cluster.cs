using System.Collections.Concurrent;
using Akka.Actor;
using Microsoft.Extensions.Logging;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Host.Cluster.Forwarding;

namespace Qcow2Actors.Host.Registry;

internal sealed partial class HostRegistry
{
    // Cluster mode: every cluster image's export on this node (forwarding, or local while owned here), by name.
    private readonly ConcurrentDictionary<string, ClusterExport> _clusterExports = new(StringComparer.Ordinal);

    // Cluster mode: the owner life of each image owned here, by TENANT/IMAGE.
    private readonly ConcurrentDictionary<string, OwnerLife> _clusterLives = new(StringComparer.Ordinal);
    private ClusterLinks? _cluster;

    /// <summary>What cluster mode's exports need of the actor system: the shard region, the owner watch, this node's address.</summary>
    internal sealed record ClusterLinks(ActorSystem System, IActorRef Region, OwnerWatch Watch, IncarnationStore Lives, ForwardingOptions Forwarding)
    {
        public string Self { get; } = Akka.Cluster.Cluster.Get(System).SelfAddress.ToString();
    }

    /// <summary>Cluster mode: set once, before <see cref="StartAsync"/> (sharding may start entities as soon as the node joined).</summary>
    public void AttachCluster(ClusterLinks links) => _cluster = links;

    private ClusterLinks Links => _cluster ?? throw new InvalidOperationException("cluster mode is not attached to the registry");

    /// <summary>
    /// Cluster mode: this node becomes the owner of TENANT/IMAGE (its sharded entity started here): the image is
    /// opened (a pending journal is replayed from PostgreSQL), a new owner life begins, and this node's export
    /// TENANT/IMAGE serves it directly (other nodes forward to it). Neither is written to this node's state file:
    /// sharding remembers which images are served, not the node.
    /// </summary>
    public Task ServeClusterImageAsync(string tenantName, string image)
    {
        // The start of a fail-over's last stage (open, journal replay): its time in the log.
        _log.LogInformation("image {Tenant}/{Image}: its entity started on this node, opening it", tenantName, image);
        return ServeClusterImageCoreAsync(tenantName, image);
    }

    private Task ServeClusterImageCoreAsync(string tenantName, string image) => ChangeAsync(async () =>
    {
        Names.Check(tenantName, "tenant");
        Names.Check(image, "image");
        var tenant = _tenants.GetOrAdd(tenantName, name => new TenantEntry(name, null, null));
        var entry = tenant.Images.GetOrAdd(image, name => new ImageEntry(tenantName, name, ImagePath(tenantName, name)));
        entry.ClusterOwned = true;
        if (!File.Exists(entry.Path))
        {
            tenant.Images.TryRemove(image, out _);
            throw HostApiException.NotFound(ErrorCodes.ImageNotFound, $"image file '{entry.Path}' is missing");
        }
        entry.Failure = null;
        if (entry.Image is null)
        {
            try
            {
                await OpenEntryAsync(tenant, entry);
            }
            catch (HostApiException)
            {
                ReleaseClosedCharge(tenant, entry);
                tenant.Images.TryRemove(image, out _);
                throw;
            }
        }
        var name = $"{tenantName}/{image}";
        if (!_exports.ContainsKey(name)) await AddExportCoreAsync(entry, name, readOnly: false, bitmaps: [], allocationDepth: false, record: null, listen: false);
        // The life begins once the image is ours (write lock held, journal replayed): only a real owner counts.
        if (!_clusterLives.TryGetValue(entry.Key, out var life))
        {
            life = await Links.Lives.BeginAsync(entry.Key);
            _clusterLives[entry.Key] = life;
        }
        long size = entry.Image!.VirtualSize;
        var export = AddClusterExport(tenantName, image, size) ?? throw new InvalidOperationException($"export '{name}' cannot be served here");
        export.AttachLocal(_exports[name].Served, life);
        ImageCatalog.Publish(Links.System, name, size);
        _log.LogInformation("image {Image} owned here: owner life {Incarnation} (lives up to {Lost} ended unclean)", entry.Key, life.Incarnation, life.LostThrough);
    });

    /// <summary>
    /// Cluster mode: this node's export of TENANT/IMAGE (made and added to the NBD server once): it forwards to the
    /// owner, or serves directly while this node owns the image. Null when the name is taken by a non-cluster
    /// export or the host is stopping.
    /// </summary>
    public ClusterExport? AddClusterExport(string tenant, string image, long size)
    {
        var name = $"{tenant}/{image}";
        lock (_clusterExports)
        {
            if (_clusterExports.TryGetValue(name, out var existing)) return existing;
            if (_stopped || _nbd is null) return null;
            if (_exports.TryGetValue(name, out var other) && !other.Image.ClusterOwned)
            {
                _log.LogWarning("cluster image {Export} is not exported here: this node has its own export of that name", name);
                return null;
            }
            var links = Links;
            var export = new ClusterExport(name, tenant, size, new ShardChannel(links.Region, name, links.Watch), links.Forwarding, links.Self);
            _clusterExports[name] = export;
            if (_tenants.GetValueOrDefault(tenant) is { Revoked: true })
                _log.LogWarning("cluster image {Export}: tenant {Tenant} is revoked here; not served over NBD", name, tenant);
            else _nbd.AddExport(export);
            _log.LogInformation("cluster image {Export} exported on this node ({Size} bytes)", name, size);
            return export;
        }
    }

    /// <summary>This node's export of the cluster image <paramref name="name"/> (TENANT/IMAGE); null if it has none.</summary>
    public ClusterExport? ClusterExportOf(string name) => _clusterExports.GetValueOrDefault(name);

    /// <summary>
    /// Cluster mode: this node hands TENANT/IMAGE over (its entity is stopping): its export stops serving directly
    /// (new requests are forwarded to the next owner) once the requests in flight on it finished, the image is
    /// checkpointed and closed clean, its owner life marked clean, and the node forgets it.
    /// </summary>
    public Task ReleaseClusterImageAsync(string tenantName, string image) => ChangeAsync(async () =>
    {
        if (_tenants.GetValueOrDefault(tenantName) is not { } tenant || tenant.Images.GetValueOrDefault(image) is not { ClusterOwned: true } entry)
            return;
        await CloseClusterEntryAsync(tenant, entry);
        ReleaseClosedCharge(tenant, entry);
        tenant.Images.TryRemove(image, out _);
    });

    /// <summary>
    /// Detaches a cluster-owned image from its exports (waiting for their requests in flight), closes it and, when it
    /// closed clean, marks its owner life clean (the next owner's proxies keep their unflushed writes).
    /// </summary>
    private async Task<bool> CloseClusterEntryAsync(TenantEntry tenant, ImageEntry entry)
    {
        foreach (var name in entry.Exports)
        {
            if (_clusterExports.TryGetValue(name, out var cluster)) await cluster.DetachLocalAsync();
            if (!_exports.TryRemove(name, out var export)) continue;
            if (!_stopped)
            {
                // (A stopping host has disposed the throttles already.)
                export.Served.SetGroups();
                ForgetThrottle(export);
            }
            await export.Export.DisposeAsync();
        }
        entry.Exports = [];
        bool clean = entry.Image is null || await CloseEntryAsync(tenant, entry);
        if (clean) _log.LogInformation("image {Image} handed off clean", entry.Key);
        else _log.LogWarning("image {Image} did not close clean on hand-off; its journal makes the next owner recover it", entry.Key);
        if (_clusterLives.TryRemove(entry.Key, out var life) && clean)
        {
            try
            {
                await Links.Lives.EndCleanAsync(entry.Key, life.Incarnation);
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                // Not marked: the next owner treats this life as lost, which costs a client an EIO on flush, never data.
                _log.LogWarning("image {Image}: owner life {Incarnation} not marked clean: {Reason}", entry.Key, life.Incarnation, OneLine(ex));
            }
        }
        return clean;
    }

    /// <summary>The host stops: every cluster export stops calling its image, once the requests running on it finished.</summary>
    private async Task DetachClusterExportsAsync()
    {
        foreach (var export in _clusterExports.Values) await export.DetachLocalAsync();
    }

    /// <summary>The images this node owns in the cluster now (TENANT/IMAGE).</summary>
    public IReadOnlyList<string> ClusterOwnedImages() =>
        [.. _tenants.Values.SelectMany(t => t.Images.Values).Where(i => i.ClusterOwned && i.Image is not null).Select(i => i.Key).Order(StringComparer.Ordinal)];
}
