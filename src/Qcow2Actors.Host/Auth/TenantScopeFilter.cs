using Microsoft.AspNetCore.Http;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Auth;

/// <summary>
/// Confines a tenant token to its tenant, once for every API route group: a route's <c>{tenant}</c> (or
/// <c>?tenant=</c>), a route's export <c>{name}</c> and an export request's tenant must be the caller's own;
/// anything else answers exactly as if it did not exist (404 with the same code and message), so the names of
/// other tenants' things do not leak. Lists are narrowed by their endpoints from <see cref="Caller.Tenant"/>.
/// </summary>
internal sealed class TenantScopeFilter(HostRegistry registry) : IEndpointFilter
{
    public async ValueTask<object?> InvokeAsync(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        var http = context.HttpContext;
        var caller = Caller.Of(http);
        if (caller.Tenant is { } own)
        {
            Check(http, own, context.Arguments);
            // The token was checked before the request queued for the registry's gate; a revoke may run first.
            HostRegistry.ActingToken.Value = (own, caller.TokenId!);
        }
        return await next(context);
    }

    private void Check(HttpContext http, string own, IList<object?> arguments)
    {
        var values = http.Request.RouteValues;
        if (values.TryGetValue("tenant", out var t) && t is string tenant && tenant != own) throw Hidden(http, MissingTenant(tenant));
        if (http.Request.Query.TryGetValue("tenant", out var q) && q.ToString() is { Length: > 0 } queried && queried != own)
            throw Hidden(http, MissingTenant(queried));
        if (values.TryGetValue("name", out var n) && n is string raw)
        {
            var export = Uri.UnescapeDataString(raw);
            if (registry.ExportTenant(export) != own)
                throw Hidden(http, HostApiException.NotFound(ErrorCodes.ExportNotFound, $"no export named '{export}'"));
        }
        foreach (var argument in arguments)
        {
            if (argument is not ExportAddRequest add) continue;
            if (add.Tenant != own) throw Hidden(http, MissingTenant(add.Tenant));
            // Export names are one namespace for the whole host: a tenant names its own under TENANT/, so an
            // "exists" answer cannot tell it about another tenant's export.
            if (!string.IsNullOrEmpty(add.Name) && !add.Name.StartsWith(own + "/", StringComparison.Ordinal))
            {
                ControlAuthentication.MarkRefused(http);
                throw new HostApiException(403, ErrorCodes.Forbidden, $"a tenant's export names start with '{own}/' (got '{add.Name}')");
            }
        }
    }

    private static HostApiException MissingTenant(string name) =>
        HostApiException.NotFound(ErrorCodes.TenantNotFound, $"no tenant named '{name}'");

    private static HostApiException Hidden(HttpContext http, HostApiException missing)
    {
        ControlAuthentication.MarkRefused(http);
        return missing;
    }
}
