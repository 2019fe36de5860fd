using Akka.Actor;
using Akka.Cluster.Sharding;
using Akka.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Host.Cluster;
using Qcow2Actors.Host.Config;
using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Api;

/// <summary>/v1/cluster (cluster mode): the members and what this node owns; serving an image from the cluster.</summary>
internal static class ClusterEndpoints
{
    public static void Map(IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("").WithTags("cluster").WithMetadata(Auth.OperatorOnly.Instance);
        group.MapGet(Routes.Cluster, (HostSettings settings, HostRegistry registry, IServiceProvider services) =>
        {
            RefuseUnlessCluster(settings);
            var cluster = Akka.Cluster.Cluster.Get(services.GetRequiredService<ActorSystem>());
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

    private static void RefuseUnlessCluster(HostSettings settings)
    {
        if (settings.Cluster is null)
            throw HostApiException.BadRequest("this host is not in cluster mode (q2a host --cluster, or qcow2actors.host.cluster.enabled = on)");
    }
}
