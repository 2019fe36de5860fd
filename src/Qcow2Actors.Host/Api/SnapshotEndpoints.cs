using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Api;

/// <summary>Internal snapshots of an image, served or not.</summary>
internal static class SnapshotEndpoints
{
    public static void Map(IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("").WithTags("snapshots");
        group.MapGet(Routes.Snapshots, async (string tenant, string image, HostRegistry registry) =>
            TypedResults.Ok(await registry.ListSnapshotsAsync(tenant, image)));
        group.MapPost(Routes.Snapshots, async (string tenant, string image, SnapshotCreateRequest request, HostRegistry registry) =>
        {
            var snapshot = await registry.CreateSnapshotAsync(tenant, image, request);
            return TypedResults.Created(Routes.SnapshotPath(tenant, image, snapshot.Name), snapshot);
        });
        group.MapDelete(Routes.Snapshot, async (string tenant, string image, string snapshot, HostRegistry registry) =>
        {
            await registry.DeleteSnapshotAsync(tenant, image, snapshot);
            return TypedResults.NoContent();
        });
        group.MapPost(Routes.SnapshotApply, async (string tenant, string image, string snapshot, HostRegistry registry) =>
            TypedResults.Ok(await registry.ApplySnapshotAsync(tenant, image, snapshot)));
    }
}
