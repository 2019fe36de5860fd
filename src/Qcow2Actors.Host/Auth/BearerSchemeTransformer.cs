using Microsoft.AspNetCore.OpenApi;
using Microsoft.OpenApi;

namespace Qcow2Actors.Host.Auth;

/// <summary>The OpenAPI document says how to authenticate: an HTTP bearer token (or, on TLS, a client certificate).</summary>
internal sealed class BearerSchemeTransformer : IOpenApiDocumentTransformer
{
    public const string SchemeName = "bearer";

    public Task TransformAsync(OpenApiDocument document, OpenApiDocumentTransformerContext context, CancellationToken cancellationToken)
    {
        document.Components ??= new OpenApiComponents();
        document.Components.SecuritySchemes ??= new Dictionary<string, IOpenApiSecurityScheme>();
        document.Components.SecuritySchemes[SchemeName] = new OpenApiSecurityScheme
        {
            Type = SecuritySchemeType.Http,
            Scheme = "bearer",
            Description = "an operator's token (control.operators.NAME.token-file) or a tenant's (POST /v1/tenants/{tenant}/tokens); "
                + "on the TCP port an operator's client certificate does too, and on the Unix socket the caller's uid",
        };
        document.Security ??= [];
        document.Security.Add(new OpenApiSecurityRequirement { [new OpenApiSecuritySchemeReference(SchemeName, document)] = [] });
        return Task.CompletedTask;
    }
}
