using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Host.Auth;
using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Api;

/// <summary>/v1/tenants: create, list, get, change quota and image limit, delete.</summary>
internal static class TenantEndpoints
{
    public static void Map(IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("").WithTags("tenants");
        group.MapPost(Routes.Tenants, async (TenantCreateRequest request, HostRegistry registry) =>
        {
            var tenant = await registry.CreateTenantAsync(request);
            return TypedResults.Created(Routes.TenantPath(tenant.Name), tenant);
        }).WithMetadata(OperatorOnly.Instance);
        group.MapGet(Routes.Tenants, (Caller caller, HostRegistry registry) => TypedResults.Ok(registry.ListTenants(caller.Tenant)));
        group.MapGet(Routes.Tenant, (string tenant, HostRegistry registry) => TypedResults.Ok(registry.GetTenant(tenant)));
        group.MapPatch(Routes.Tenant, async (string tenant, TenantUpdateRequest request, HostRegistry registry) =>
            TypedResults.Ok(await registry.UpdateTenantAsync(tenant, request))).WithMetadata(OperatorOnly.Instance);
        group.MapDelete(Routes.Tenant, async (string tenant, HostRegistry registry) =>
        {
            await registry.DeleteTenantAsync(tenant);
            return TypedResults.NoContent();
        }).WithMetadata(OperatorOnly.Instance);
    }
}
