using System.Net.Sockets;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Auth;

/// <summary>
/// Finds who sent each control request before any endpoint runs, refuses the rest, and has the audit log
/// written before the reply leaves.
/// </summary>
/// <remarks>
/// Unix socket: the peer's uid (SO_PEERCRED, read once per connection) must be allowed; a bearer token, when
/// given, then decides who the caller is. TCP (always TLS, Kestrel checked the client certificate against the
/// CA): a bearer token, else a client certificate whose subject is an operator's, else 401. A tenant token
/// is refused on <see cref="OperatorOnly"/> endpoints here; its confinement to its tenant is
/// <see cref="TenantScopeFilter"/>'s.
/// </remarks>
internal sealed class ControlAuthentication(RequestDelegate next, ControlAuthSettings settings, HostRegistry registry, AuditLog audit)
{
    private static readonly object PeerKey = new();
    private static readonly object RefusedKey = new();
    private static readonly object CodeKey = new();
    private readonly uint _ownUid = OperatingSystem.IsWindows() ? 0 : ControlSocket.EffectiveUserId();

    public async Task InvokeAsync(HttpContext context)
    {
        context.Response.OnStarting(() => AuditAsync(context));
        var caller = Authenticate(context);
        caller.Attach(context);
        if (caller.Tenant is not null && context.GetEndpoint()?.Metadata.GetMetadata<OperatorOnly>() is not null)
            throw Forbidden($"a tenant token may not do {context.Request.Method} {context.Request.Path}");
        await next(context);
    }

    /// <summary>Marks the request refused (by the tenant scope: a 404 that hides a name), so the audit log keeps it.</summary>
    public static void MarkRefused(HttpContext context) => context.Items[RefusedKey] = true;

    /// <summary>The error code of the reply (ApiErrors), for the audit line.</summary>
    public static void SetErrorCode(HttpContext context, string code) => context.Items[CodeKey] = code;

    private Caller Authenticate(HttpContext context)
    {
        var socket = context.Features.Get<IConnectionSocketFeature>()?.Socket;
        var bearer = Bearer(context.Request);
        if (socket?.AddressFamily == AddressFamily.Unix)
        {
            var peer = Peer(context, socket);
            if (peer is null) throw Forbidden("the control socket cannot tell who is calling (no SO_PEERCRED)");
            var user = Caller.User(peer.Value.Uid);
            if (!Allowed(peer.Value.Uid))
            {
                user.Attach(context); // the audit line names the uid refused
                throw Forbidden($"uid {peer.Value.Uid} may not use the control socket (qcow2actors.host.control.allowed-uids)");
            }
            return bearer is null ? user : ByToken(context, bearer);
        }
        if (bearer is not null) return ByToken(context, bearer);
        if (context.Connection.ClientCertificate is { } certificate)
        {
            var subject = CertificateSubject.Of(certificate);
            var normalized = CertificateSubject.TryNormalize(subject);
            var op = settings.Operators.FirstOrDefault(o => o.Subject is not null && string.Equals(o.Subject, normalized, StringComparison.Ordinal));
            if (op is null)
            {
                new Caller { Who = $"cert:{subject}" }.Attach(context); // the audit line names the certificate refused
                throw Forbidden($"client certificate '{subject}' is not an operator's (qcow2actors.host.control.operators)");
            }
            return Caller.Operator(op.Name);
        }
        throw new HostApiException(401, ErrorCodes.Unauthorized, "no credentials: give an Authorization: Bearer token or a client certificate");
    }

    private bool Allowed(uint uid) => settings.AllowedUids.Count == 0 ? uid == _ownUid || uid == 0 : settings.AllowedUids.Contains(uid);

    private static PeerCredentials? Peer(HttpContext context, Socket socket)
    {
        var items = context.Features.Get<IConnectionItemsFeature>()?.Items;
        if (items?.TryGetValue(PeerKey, out var known) == true) return (PeerCredentials?)known;
        var peer = PeerCredentials.Read(socket);
        if (items is not null) items[PeerKey] = peer;
        return peer;
    }

    /// <summary>An operator's token or a tenant's; every candidate is compared, each in constant time.</summary>
    private Caller ByToken(HttpContext context, string token)
    {
        var hash = TokenHash.Of(token);
        OperatorConfig? op = null;
        foreach (var o in settings.Operators)
            if (o.TokenHash is not null && TokenHash.Equal(o.TokenHash, hash)) op = o;
        if (op is not null) return Caller.Operator(op.Name);
        var tenantToken = registry.FindToken(hash)
            ?? throw new HostApiException(401, ErrorCodes.Unauthorized, "the bearer token is not valid");
        var caller = Caller.TenantToken(tenantToken.Tenant, tenantToken.Id);
        if (registry.IsRevoked(tenantToken.Tenant))
        {
            caller.Attach(context); // the audit line names the token refused
            throw Forbidden($"tenant '{tenantToken.Tenant}' is revoked");
        }
        return caller;
    }

    private static string? Bearer(HttpRequest request)
    {
        var header = request.Headers.Authorization.ToString();
        if (header.Length == 0) return null;
        const string Scheme = "Bearer ";
        if (!header.StartsWith(Scheme, StringComparison.OrdinalIgnoreCase) || header.Length == Scheme.Length)
            throw new HostApiException(401, ErrorCodes.Unauthorized, "the Authorization header is not 'Bearer TOKEN'");
        return header[Scheme.Length..].Trim();
    }

    private static HostApiException Forbidden(string message) => new(403, ErrorCodes.Forbidden, message);

    private async Task AuditAsync(HttpContext context)
    {
        var request = context.Request;
        int status = context.Response.StatusCode;
        bool mutating = !(HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method) || HttpMethods.IsOptions(request.Method));
        if (!mutating && status is not (401 or 403) && !context.Items.ContainsKey(RefusedKey)) return;
        var who = Caller.Find(context)?.Who ?? RemoteName(context);
        var route = (context.GetEndpoint() as RouteEndpoint)?.RoutePattern.RawText ?? "";
        await audit.WriteAsync(who, request.Method, route, request.Path + request.QueryString, status, context.Items[CodeKey] as string);
    }

    private static string RemoteName(HttpContext context) =>
        context.Connection.RemoteIpAddress is { } ip ? $"anonymous:{ip}" : "anonymous";
}
