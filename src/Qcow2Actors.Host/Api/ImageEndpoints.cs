using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Host.Auth;
using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Api;

/// <summary>Images of a tenant: create, list, info, open, close, delete, check, resize.</summary>
internal static class ImageEndpoints
{
    public static void Map(IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("").WithTags("images");
        group.MapPost(Routes.TenantImages, async (string tenant, ImageCreateRequest request, HostRegistry registry) =>
        {
            var image = await registry.CreateImageAsync(tenant, request);
            return TypedResults.Created(Routes.ImagePath(tenant, image.Name), image);
        });
        group.MapGet(Routes.Images, (string? tenant, Caller caller, HostRegistry registry) =>
            TypedResults.Ok(registry.ListImages(caller.Tenant ?? tenant)));
        group.MapGet(Routes.TenantImages, (string tenant, HostRegistry registry) => TypedResults.Ok(registry.ListImages(tenant)));
        group.MapGet(Routes.Image, (string tenant, string image, HostRegistry registry) => TypedResults.Ok(registry.GetImage(tenant, image)));
        group.MapPost(Routes.ImageOpen, async (string tenant, string image, HostRegistry registry) =>
            TypedResults.Ok(await registry.OpenImageAsync(tenant, image)));
        group.MapPost(Routes.ImageClose, async (string tenant, string image, HostRegistry registry) =>
            TypedResults.Ok(await registry.CloseImageAsync(tenant, image)));
        group.MapDelete(Routes.Image, async (string tenant, string image, HostRegistry registry) =>
        {
            await registry.DeleteImageAsync(tenant, image);
            return TypedResults.NoContent();
        });
        group.MapPost(Routes.ImageCheck, async (string tenant, string image, HostRegistry registry) =>
            TypedResults.Ok(await registry.CheckImageAsync(tenant, image)));
        group.MapPost(Routes.ImageResize, async (string tenant, string image, ResizeRequest request, HostRegistry registry) =>
            TypedResults.Ok(await registry.ResizeImageAsync(tenant, image, request)));
    }
}
