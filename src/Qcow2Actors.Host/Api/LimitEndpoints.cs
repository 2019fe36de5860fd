using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Host.Auth;
using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Api;

/// <summary>/v1/limits: throttle groups on an export or shared by a tenant's exports.</summary>
internal static class LimitEndpoints
{
    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapGroup("").WithTags("limits")
            .MapGet(Routes.Limits, (Caller caller, HostRegistry registry) => TypedResults.Ok(registry.ListLimits(caller.Tenant)));
        // Setting and clearing limits is host administration.
        var group = app.MapGroup("").WithTags("limits").WithMetadata(OperatorOnly.Instance);
        group.MapPut(Routes.ExportLimit, async (string name, LimitRequest request, HostRegistry registry) =>
            TypedResults.Ok(await registry.SetExportLimitAsync(Uri.UnescapeDataString(name), request)));
        group.MapPut(Routes.TenantLimit, async (string tenant, LimitRequest request, HostRegistry registry) =>
            TypedResults.Ok(await registry.SetTenantLimitAsync(tenant, request)));
        group.MapDelete(Routes.ExportLimit, async (string name, HostRegistry registry) =>
        {
            await registry.ClearExportLimitAsync(Uri.UnescapeDataString(name));
            return TypedResults.NoContent();
        });
        group.MapDelete(Routes.TenantLimit, async (string tenant, HostRegistry registry) =>
        {
            await registry.ClearTenantLimitAsync(tenant);
            return TypedResults.NoContent();
        });
    }
}
