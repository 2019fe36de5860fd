using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Api;

/// <summary>GET /v1/health.</summary>
internal static class HealthEndpoints
{
    public static void Map(IEndpointRouteBuilder app) =>
        app.MapGet(Routes.Health, (HostRegistry registry) => TypedResults.Ok(registry.Health())).WithTags("health").WithMetadata(Auth.OperatorOnly.Instance);
}
