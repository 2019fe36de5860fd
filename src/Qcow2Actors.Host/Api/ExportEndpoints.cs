using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Host.Auth;
using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Api;

/// <summary>/v1/exports: add, list, remove NBD exports at run time.</summary>
internal static class ExportEndpoints
{
    public static void Map(IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("").WithTags("exports");
        group.MapPost(Routes.Exports, async (ExportAddRequest request, HostRegistry registry) =>
        {
            var export = await registry.AddExportAsync(request);
            return TypedResults.Created(Routes.ExportPath(export.Name), export);
        });
        group.MapGet(Routes.Exports, (Caller caller, HostRegistry registry) => TypedResults.Ok(registry.ListExports(caller.Tenant)));
        group.MapDelete(Routes.Export, async (string name, HostRegistry registry) =>
        {
            await registry.RemoveExportAsync(Uri.UnescapeDataString(name));
            return TypedResults.NoContent();
        });
    }
}
