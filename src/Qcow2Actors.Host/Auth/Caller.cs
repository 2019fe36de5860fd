using Microsoft.AspNetCore.Http;

namespace Qcow2Actors.Host.Auth;

/// <summary>
/// Who sent a control request, as the authentication found it: a local user (Unix socket, by uid), an
/// operator (client certificate or operator token) or a tenant (one of its tokens). Only a tenant is confined.
/// </summary>
internal sealed record Caller
{
    /// <summary>The audit log's "who": <c>uid:N</c>, <c>operator:NAME</c>, <c>tenant:NAME/TOKEN-ID</c>, or <c>cert:SUBJECT</c> for a refused certificate.</summary>
    public required string Who { get; init; }

    /// <summary>The tenant a tenant token confines the caller to; null: full access.</summary>
    public string? Tenant { get; init; }

    /// <summary>The id of the tenant token the caller presented; null for other callers.</summary>
    public string? TokenId { get; init; }

    public static Caller User(uint uid) => new() { Who = $"uid:{uid}" };

    public static Caller Operator(string name) => new() { Who = $"operator:{name}" };

    public static Caller TenantToken(string tenant, string id) => new() { Who = $"tenant:{tenant}/{id}", Tenant = tenant, TokenId = id };

    private static readonly object Key = new();

    /// <summary>The caller of <paramref name="context"/>; set by <see cref="ControlAuthentication"/> before any endpoint runs.</summary>
    public static Caller Of(HttpContext context) => context.Items[Key] as Caller
        ?? throw new InvalidOperationException("the request was not authenticated");

    /// <summary>The caller when known (the audit log also names refused, unauthenticated ones).</summary>
    public static Caller? Find(HttpContext context) => context.Items[Key] as Caller;

    public void Attach(HttpContext context) => context.Items[Key] = this;

    /// <summary>Lets an endpoint take the caller as a parameter (minimal APIs' BindAsync convention).</summary>
    public static ValueTask<Caller?> BindAsync(HttpContext context) => ValueTask.FromResult<Caller?>(Of(context));
}
