using Akka.Actor;
using Akka.Cluster.Sharding;
using Akka.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Host.Cluster;
using Qcow2Actors.Host.Cluster.Ownership;
using Qcow2Actors.Host.Config;
using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Api;

/// <summary>/v1/cluster (cluster mode): the members, which node owns which image; serving and un-serving an image from the cluster.</summary>
internal static class ClusterEndpoints
{
    public static void Map(IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("").WithTags("cluster").WithMetadata(Auth.OperatorOnly.Instance);
        group.MapGet(Routes.Cluster, async (HostSettings settings, HostRegistry registry, IServiceProvider services) =>
        {
            RefuseUnlessCluster(settings);
            var system = services.GetRequiredService<ActorSystem>();
            var (owners, unanswered) = await ClusterOwners.CollectAsync(system,
                services.GetRequiredService<IRequiredActor<ImageEntity>>().ActorRef, OwnersTimeout);
            var cluster = Akka.Cluster.Cluster.Get(system);
            var state = cluster.State;
            var unreachable = state.Unreachable.Select(m => m.Address).ToHashSet();
            return TypedResults.Ok(new ClusterReply
            {
                Self = cluster.SelfAddress.ToString(),
                Leader = state.Leader?.ToString(),
                Members = [.. state.Members.Select(m => new ClusterMemberReply
                {
                    Address = m.Address.ToString(),
                    Status = m.Status.ToString().ToLowerInvariant(),
                    Unreachable = unreachable.Contains(m.Address),
                })],
                OwnedImages = registry.ClusterOwnedImages(),
                Owners = owners,
                Unanswered = unanswered,
            });
        });
        group.MapPost(Routes.ClusterImages, (ClusterImageRequest request, HostSettings settings, IServiceProvider services) =>
        {
            RefuseUnlessCluster(settings);
            Names.Check(request.Tenant, "tenant");
            Names.Check(request.Image, "image");
            var path = Path.Combine(settings.DataDir, request.Tenant, request.Image + ".qcow2");
            if (!File.Exists(path))
                throw HostApiException.NotFound(ErrorCodes.ImageNotFound, $"image file '{path}' is missing");
            // The entity starts on the node sharding picks and, remembered, comes back wherever a shard moves.
            var region = services.GetRequiredService<IRequiredActor<ImageEntity>>().ActorRef;
            region.Tell(new ShardingEnvelope($"{request.Tenant}/{request.Image}", new ImageEntity.Serve()));
            return TypedResults.Accepted(Routes.Cluster, request);
        });
        group.MapDelete(Routes.ClusterImage, async (string tenant, string image, HostSettings settings, IServiceProvider services) =>
        {
            RefuseUnlessCluster(settings);
            Names.Check(tenant, "tenant");
            Names.Check(image, "image");
            // The owner closes it (as on hand-off) and sharding forgets it; the reply waits for the close.
            var (reply, unanswered) = await ClusterOwners.UnserveAsync(services.GetRequiredService<ActorSystem>(), $"{tenant}/{image}",
                settings.StopTimeout + TimeSpan.FromSeconds(35));
            if (reply is { Error: { } error })
                throw HostApiException.Conflict(ErrorCodes.ImageInUse, $"image '{tenant}/{image}' was not un-served: {error}");
            if (reply is null)
                throw HostApiException.NotFound(ErrorCodes.ImageNotFound, $"image '{tenant}/{image}' is not served by the cluster (no node runs it"
                    + (unanswered.Count == 0 ? ")" : $"; no answer from {string.Join(", ", unanswered)})"));
            return TypedResults.NoContent();
        });
        group.MapPost(Routes.ClusterDrain, (HostSettings settings, IServiceProvider services, Microsoft.Extensions.Logging.ILoggerFactory loggers) =>
        {
            RefuseUnlessCluster(settings);
            // Leaving runs the coordinated shutdown: the registry closes the images clean (clients forwarding to them
            // are told to ask again), sharding hands the shards to the other nodes, and once this node is removed its
            // actor system ends and the host exits (RegistryService).
            var cluster = Akka.Cluster.Cluster.Get(services.GetRequiredService<ActorSystem>());
            Microsoft.Extensions.Logging.LoggerExtensions.LogInformation(loggers.CreateLogger("Qcow2Actors.Host.Cluster"),
                "cluster: draining {Address}: leaving the cluster, handing images off", cluster.SelfAddress);
            cluster.Leave(cluster.SelfAddress);
            return TypedResults.NoContent();
        });
    }

    /// <summary>How long GET /v1/cluster waits for each member's shard region and agent.</summary>
    private static readonly TimeSpan OwnersTimeout = TimeSpan.FromSeconds(3);

    private static void RefuseUnlessCluster(HostSettings settings)
    {
        if (settings.Cluster is null)
            throw HostApiException.BadRequest("this host is not in cluster mode (q2a host --cluster, or qcow2actors.host.cluster.enabled = on)");
    }
}
