using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Qcow2Actors.Host.Auth;
using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Api;

/// <summary>Tenants' API tokens and tenant revocation: host administration, operators only.</summary>
internal static class TokenEndpoints
{
    public static void Map(IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("").WithTags("access").WithMetadata(OperatorOnly.Instance);
        group.MapPost(Routes.TenantTokens, async (string tenant, HostRegistry registry) =>
        {
            var token = await registry.CreateTokenAsync(tenant);
            return TypedResults.Created(Routes.TenantTokensPath(tenant, token.Id), token);
        });
        group.MapGet(Routes.TenantTokens, (string tenant, HostRegistry registry) => TypedResults.Ok(registry.ListTokens(tenant)));
        group.MapDelete(Routes.TenantToken, async (string tenant, string id, HostRegistry registry) =>
        {
            await registry.RevokeTokenAsync(tenant, id);
            return TypedResults.NoContent();
        });
        group.MapPost(Routes.TenantRevoke, async (string tenant, HostRegistry registry) => TypedResults.Ok(await registry.RevokeTenantAsync(tenant)));
        group.MapPost(Routes.TenantRestore, async (string tenant, HostRegistry registry) => TypedResults.Ok(await registry.RestoreTenantAsync(tenant)));
    }
}
